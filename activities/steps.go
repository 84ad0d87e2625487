package activities

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/setflow/setflow/internal/httpx"
	"github.com/setflow/setflow/profile"
	"github.com/setflow/setflow/reaction"
)

func done(detail map[string]any) reaction.StepResult {
	return reaction.StepResult{Outcome: reaction.OutcomeDone, Detail: detail}
}
func skipped(reason string) reaction.StepResult {
	return reaction.StepResult{Outcome: reaction.OutcomeSkipped, Detail: map[string]any{"reason": reason}}
}

// profileKey is the profile of the step's user.
func profileKey(in reaction.StepInput) profile.Key {
	return profile.Key{Issuer: in.Event.Subject.Issuer, UserID: in.Event.Subject.UserID}
}

// classify turns a back end's error into a Temporal error: non-retryable with a
// clear reason when retrying cannot help, else retryable, after retryAfter
// when the far end asked for it (429 Retry-After).
func classify(what string, err error, retryable bool, retryAfter time.Duration) error {
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf("%s: %v", what, err)
	if !retryable {
		return temporal.NewApplicationErrorWithOptions(msg, reaction.ErrTypePermanent, temporal.ApplicationErrorOptions{NonRetryable: true})
	}
	// A far end may ask for hours (a daily quota); past this cap the retry
	// schedule takes over and the step parks rather than sleeping for a day.
	const maxRetryAfter = 10 * time.Minute
	if retryAfter > maxRetryAfter {
		retryAfter = maxRetryAfter
	}
	if retryAfter > 0 {
		return temporal.NewApplicationErrorWithOptions(msg, reaction.ErrTypeRateLimited, temporal.ApplicationErrorOptions{NextRetryDelay: retryAfter})
	}
	return temporal.NewApplicationError(msg, reaction.ErrTypeUnavailable)
}

// adapterError classifies an API client's failure (crm, kakaoapi, the
// service webhook) by what the error says about retrying
// (httpx.RetryableError); any other error is permanent.
func adapterError(what string, err error) error {
	retryable, after := httpx.RetryOf(err)
	return classify(what, err, retryable, after)
}
