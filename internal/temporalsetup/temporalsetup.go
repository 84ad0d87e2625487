// Package temporalsetup registers what setflow needs on a Temporal namespace
// (its custom search attributes) and checks that it is there. Registration is
// idempotent: attributes already present with the right type are left alone.
package temporalsetup

import (
	"context"
	"fmt"
	"sort"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/setflow/setflow/internal/searchattr"
)

// Missing returns the setflow search attributes the namespace lacks, and an
// error if one is registered with another type (which setflow cannot fix).
func Missing(ctx context.Context, c client.Client, namespace string) ([]string, error) {
	resp, err := c.OperatorService().ListSearchAttributes(ctx,
		&operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return nil, fmt.Errorf("list search attributes: %w", err)
	}
	have := resp.GetCustomAttributes()
	var missing []string
	for name, typ := range searchattr.All() {
		got, ok := have[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		if got != typ {
			return nil, fmt.Errorf("search attribute %s is registered as %s, setflow needs %s", name, got, typ)
		}
	}
	sort.Strings(missing)
	return missing, nil
}

// Register adds the missing setflow search attributes to the namespace.
func Register(ctx context.Context, c client.Client, namespace string) (added []string, err error) {
	missing, err := Missing(ctx, c, namespace)
	if err != nil || len(missing) == 0 {
		return nil, err
	}
	want := searchattr.All()
	attrs := make(map[string]enums.IndexedValueType, len(missing))
	for _, name := range missing {
		attrs[name] = want[name]
	}
	if _, err := c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace: namespace, SearchAttributes: attrs,
	}); err != nil {
		return nil, fmt.Errorf("add search attributes: %w", err)
	}
	return missing, nil
}

// DevServerArgs are the `temporal server start-dev` flags that register
// setflow's search attributes when a development server starts.
func DevServerArgs() []string {
	var args []string
	for name, typ := range searchattr.All() {
		t := "Keyword"
		if typ == enums.INDEXED_VALUE_TYPE_KEYWORD_LIST {
			t = "KeywordList"
		}
		args = append(args, "--search-attribute", name+"="+t)
	}
	return args
}
