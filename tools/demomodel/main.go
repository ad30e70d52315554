// Command demomodel is a stand-in for a classification model endpoint, for
// `make demo-classify`: it answers each POSTed JSON array of {"text": …}
// with one {"label", "confidence"} per record, in order, by keywords.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
)

var intents = []struct {
	label string
	words []string
}{
	{"cancellation", []string{"cancel", "säga upp", "terminate"}},
	{"billing", []string{"bill", "invoice", "faktura", "charge", "price"}},
	{"technical", []string{"router", "wifi", "internet", "slow", "outage", "connection"}},
}

func classify(text string) (string, float64) {
	t := strings.ToLower(text)
	for _, in := range intents {
		for _, w := range in.words {
			if strings.Contains(t, w) {
				return in.label, 0.9
			}
		}
	}
	return "other", 0.5
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8788", "where to listen")
	flag.Parse()
	http.HandleFunc("POST /classify", func(w http.ResponseWriter, r *http.Request) {
		var recs []struct {
			Text string `json:"text"`
		}
		if err := json.NewDecoder(r.Body).Decode(&recs); err != nil {
			http.Error(w, "want a JSON array of records: "+err.Error(), http.StatusBadRequest)
			return
		}
		out := make([]map[string]any, len(recs))
		for i, rec := range recs {
			label, conf := classify(rec.Text)
			out[i] = map[string]any{"label": label, "confidence": conf}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(out)
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("model listening on http://%s/classify\n", ln.Addr())
	log.Fatal(http.Serve(ln, nil))
}
