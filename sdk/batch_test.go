package sdk_test

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
)

func strings(vals ...string) arrow.Array {
	b := array.NewStringBuilder(memory.DefaultAllocator)
	defer b.Release()
	b.AppendValues(vals, nil)
	return b.NewArray()
}

func TestNewBatchSplitsBookkeepingColumns(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "text", Type: arrow.BinaryTypes.String},
		{Name: sdk.IDColumn, Type: arrow.BinaryTypes.String},
		{Name: sdk.TemplateColumnPrefix + "url", Type: arrow.BinaryTypes.String},
		{Name: sdk.TemplateColumnPrefix + "headers.X-Id", Type: arrow.BinaryTypes.String},
	}, nil)
	rec := array.NewRecordBatch(schema, []arrow.Array{
		strings("hej", "då"), strings("row_1", "row_2"), strings("http://a/1", "http://a/2"), strings("c1", "c2"),
	}, 2)
	b := sdk.NewBatch(rec)
	if b.Len() != 2 || b.Record.NumCols() != 1 || b.Record.ColumnName(0) != "text" {
		t.Fatalf("record keeps only data columns: %v", b.Record.Schema())
	}
	if b.ID(1) != "row_2" {
		t.Errorf("ID(1) = %q", b.ID(1))
	}
	if v, ok := b.Template("url", 0); !ok || v != "http://a/1" {
		t.Errorf("Template(url, 0) = %q, %v", v, ok)
	}
	if v, ok := b.Template("headers.X-Id", 1); !ok || v != "c2" {
		t.Errorf("Template(headers.X-Id, 1) = %q, %v", v, ok)
	}
	if _, ok := b.Template("text", 0); ok {
		t.Error("an attribute without placeholders has no template column")
	}
}

func TestConfigDecodeAndTemplates(t *testing.T) {
	cfg := sdk.Config{Name: "crm", JSON: []byte(`{"url":"http://x","n":3}`), Templates: []string{"url"}}
	var v struct {
		URL string `json:"url"`
		N   int    `json:"n"`
	}
	if err := cfg.Decode(&v); err != nil || v.URL != "http://x" || v.N != 3 {
		t.Fatalf("decode: %+v %v", v, err)
	}
	if !cfg.HasTemplate("url") || cfg.HasTemplate("n") {
		t.Error("HasTemplate")
	}
	if err := cfg.Decode(&struct {
		N string `json:"n"`
	}{}); err == nil {
		t.Error("a mistyped field must fail to decode")
	}
}

func TestListAndMapTypes(t *testing.T) {
	if got := sdk.ListOf(sdk.String); got != `["list","string"]` {
		t.Errorf("ListOf = %s", got)
	}
	if got := sdk.MapOf(sdk.ListOf(sdk.Number)); got != `["map",["list","number"]]` {
		t.Errorf("MapOf = %s", got)
	}
}
