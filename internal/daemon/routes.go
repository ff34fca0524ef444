package daemon

import (
	"slices"
	"strings"
)

// Route is one call of the API as the daemon registers it: a method and
// a path pattern in net/http.ServeMux's syntax ("/v1/vms/{name}").
type Route struct {
	Method string
	Path   string
}

func (r Route) String() string { return r.Method + " " + r.Path }

// Routes lists every call Handler serves, sorted. It is the daemon's own
// route table (read from a Handler built on an empty Server), so the
// OpenAPI document in api/openapi.yaml can be checked against it.
func Routes() []Route {
	s := &Server{}
	s.Handler()
	out := make([]Route, 0, len(s.patterns))
	for _, p := range s.patterns {
		m, path, _ := strings.Cut(p, " ")
		out = append(out, Route{Method: m, Path: path})
	}
	slices.SortFunc(out, func(a, b Route) int { return strings.Compare(a.String(), b.String()) })
	return out
}
