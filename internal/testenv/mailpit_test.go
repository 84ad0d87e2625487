package testenv

import (
	"fmt"
	"net/smtp"
	"testing"
	"time"
)

// Mailpit deletes all but its newest 500 messages unless told otherwise, and
// a test that checks every notice went out (the model test sends thousands)
// saw the older ones as never sent. It prunes once a minute, so this test
// looks after its first pruning.
func TestMailpitKeepsEveryMessage(t *testing.T) {
	started := time.Now()
	mp := Mailpit(t)
	const n = 520
	c, err := smtp.Dial(mp.SMTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range n {
		if err := c.Mail("sender@example.test"); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt(fmt.Sprintf("user%d@example.test", i)); err != nil {
			t.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Fprintf(w, "Subject: message %d\r\nMessage-ID: <m%d@example.test>\r\n\r\nbody\r\n", i, i); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	mp.WaitMessages(t, n, time.Minute)
	time.Sleep(time.Until(started.Add(65 * time.Second)))
	msgs := mp.Messages(t)
	seen := map[string]bool{}
	for _, m := range msgs {
		seen[m.MessageID] = true
	}
	for _, i := range []int{0, 1, n - 1} {
		if id := fmt.Sprintf("m%d@example.test", i); !seen[id] {
			t.Errorf("message %s not kept (%d of %d kept)", id, len(msgs), n)
		}
	}
	if len(msgs) != n {
		t.Errorf("%d of %d messages kept", len(msgs), n)
	}
}
