package relay

import (
	"os/exec"
	"strings"
	"testing"
)

// The relay (and the workflows it starts) never link the activities' back
// ends: workflows know the activities by name and package reaction's types
// only. A new import that pulls one in fails here.
func TestRelayDoesNotLinkTheActivitiesBackEnds(t *testing.T) {
	forbidden := []string{
		"github.com/setflow/setflow/activities",
		"github.com/setflow/setflow/mailer",
		"github.com/setflow/setflow/crm",
		"github.com/setflow/setflow/kakaoapi",
		"github.com/wneessen/go-mail",
		"github.com/redis/go-redis",
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the relay's dependencies: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-deps",
		"github.com/setflow/setflow/relay", "github.com/setflow/setflow/workflows").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed %d packages", len(deps))
	}
	for _, dep := range deps {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("the relay depends on %s", dep)
			}
		}
	}
}
