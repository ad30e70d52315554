package admin

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// Whatever a client puts in the query string or the path, the API answers
// 2xx or 4xx: never a panic, never a 500.
func FuzzRequests(f *testing.F) {
	fx := newFixture(f)
	fx.seed(3)
	s := New(Options{Store: fx.store, Backend: fx.backend, Token: token})
	for _, seed := range [][2]string{
		{"/api/deliveries", "status=dead&since=1h&q=c1&limit=2"},
		{"/api/deliveries", "cursor=MS4xLjI&status=failed"},
		{"/api/deliveries", "since=2026-12-01T00:00:00Z&sink=crm&pipeline=churn"},
		{"/api/deliveries/ZmF1bHRzAGNybQByMDAwNA", ""},
		{"/api/deliveries/d-0", ""},
		{"/api/pipelines/churn/nodes/source.calls/tail", "n=3"},
		{"/api/pipelines/churn", ""},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, path, query string) {
		u := &url.URL{Path: path, RawQuery: query}
		req, err := http.NewRequest("GET", "http://admin"+u.RequestURI(), nil)
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "Bearer "+token)
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("GET %s: %d %s", u.RequestURI(), w.Code, w.Body)
		}
	})
}
