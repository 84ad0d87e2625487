package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

var holdsOnce sync.Once

// RegisterHolds exposes setflow_holds_pending: events whose destructive steps
// the blast-radius guard holds for an operator (read on each scrape). Alert
// on it: nothing destructive runs while it is above zero.
func RegisterHolds(pending func() (int, error)) {
	holdsOnce.Do(func() {
		prometheus.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "setflow_holds_pending",
			Help: "Events held by the blast-radius guard, waiting for an operator's decision (-1: the count failed).",
		}, func() float64 {
			n, err := pending()
			if err != nil {
				return -1
			}
			return float64(n)
		}))
	})
}
