package expr

import (
	"fmt"
	"testing"
)

func TestFields(t *testing.T) {
	for _, tc := range []struct {
		src, want string
		template  bool
	}{
		{src: "classifications.churn_risk.label == 'High' && metadata.queue in ['a']", want: "[[classifications churn_risk label] [metadata queue]]"},
		{src: "x > 1 || lower(text) contains 'cancel'", want: "[[x] [text]]"},
		{src: "Risk {{ classifications.churn_risk.confidence }} for {{ metadata.customer_id }}", want: "[[classifications churn_risk confidence] [metadata customer_id]]", template: true},
	} {
		t.Run(tc.src, func(t *testing.T) {
			var got [][]string
			var err error
			if tc.template {
				got, err = TemplateFields(tc.src)
			} else {
				got, err = Fields(tc.src)
			}
			if err != nil || fmt.Sprint(got) != tc.want {
				t.Fatalf("got %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}
