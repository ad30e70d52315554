package arrowjson

import "testing"

func TestSmoke(t *testing.T) {
	d := NewDecoder(Options{})
	for _, l := range []string{sampleRecord, `{"a":1,"b":{"c":null},"x":[1,2.5]}`, `{"a":"s","x":[{"q":null}]}`} {
		if err := d.Append([]byte(l)); err != nil {
			t.Fatal(err)
		}
	}
	rec := d.Flush()
	t.Log(rec.Schema())
	e := NewEncoder()
	for i := 0; i < int(rec.NumRows()); i++ {
		t.Log(string(e.AppendRow(nil, rec, i)))
	}
}
