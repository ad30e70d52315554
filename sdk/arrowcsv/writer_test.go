package arrowcsv

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func TestWriterColumnsErrorNamesTheHeaderAndEveryNewColumn(t *testing.T) {
	b1 := decodeJSON(t, `{"a":1,"b":{"c":"x"}}`)
	defer b1.Release()
	b2 := decodeJSON(t, `{"a":2,"late":true,"b":{"c":"y","d":1}}`)
	defer b2.Release()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.Write(b1); err != nil {
		t.Fatal(err)
	}
	err := w.Write(b2)
	var ce *ColumnsError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want a *ColumnsError", err)
	}
	if !reflect.DeepEqual(ce.Header, []string{"a", "b.c"}) || !reflect.DeepEqual(ce.New, []string{"late", "b.d"}) {
		t.Fatalf("header %q, new %q", ce.Header, ce.New)
	}
	if want := `arrowcsv: columns "late", "b.d" are not in the CSV header (a, b.c)`; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, want := buf.String(), "a,b.c\n1,x\n"; got != want {
		t.Fatalf("CSV = %q, want %q (nothing of the failed batch)", got, want)
	}
}

func TestWriterDropUnlistedWritesExactlyTheColumns(t *testing.T) {
	b1 := decodeJSON(t, `{"a":1,"b":{"c":"x","d":2},"drop":"me"}`)
	defer b1.Release()
	b2 := decodeJSON(t, `{"late":true}`, `{"b":null,"a":3}`)
	defer b2.Release()
	var buf bytes.Buffer
	// Out of schema order, a column no batch has, and a struct as JSON.
	w := NewWriterWithColumns(&buf, []string{"b.c", "a", "missing", "b"}).DropUnlisted()
	if err := w.Write(b1); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(b2); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "b.c,a,missing,b\n" +
		"x,1,,\"{\"\"c\"\":\"\"x\"\",\"\"d\"\":2}\"\n" +
		",,,\n" +
		",3,,\n"
	if got := buf.String(); got != want {
		t.Fatalf("CSV =\n%s\nwant\n%s", got, want)
	}
}
