package sinksnowflake

import (
	"fmt"
	"strings"
)

// baseType is a Snowflake type without its length or precision:
// "NUMBER(38,0)" → "NUMBER".
func baseType(t string) string {
	t = strings.ToUpper(strings.TrimSpace(t))
	if i := strings.IndexByte(t, '('); i >= 0 {
		t = t[:i]
	}
	return strings.TrimSpace(t)
}

// canonical maps a type found in the table to the sink's type of the same
// family, or "" for a type the sink does not load into.
func canonical(t string) string {
	switch baseType(t) {
	case "VARCHAR", "TEXT", "STRING", "CHAR", "CHARACTER", "NCHAR", "NVARCHAR", "NVARCHAR2", "CHAR VARYING", "NCHAR VARYING":
		return typeVarchar
	case "NUMBER", "DECIMAL", "NUMERIC", "INT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT", "BYTEINT":
		return typeNumber
	case "FLOAT", "FLOAT4", "FLOAT8", "DOUBLE", "DOUBLE PRECISION", "REAL":
		return typeFloat
	case "BOOLEAN":
		return typeBoolean
	case "TIMESTAMP_TZ", "TIMESTAMP_LTZ", "TIMESTAMP_NTZ", "TIMESTAMP", "DATETIME":
		return typeTimestampTZ
	case "DATE":
		return typeDate
	case "VARIANT", "OBJECT", "ARRAY":
		return typeVariant
	}
	return ""
}

// reconcile says how a field of type want loads into an existing column of
// type have: the type to load it as, or an error naming both types.
func reconcile(table string, c column, have string) (string, error) {
	canon := canonical(have)
	switch {
	case canon == c.Type:
		return canon, nil
	case canon == typeFloat && c.Type == typeNumber:
		return typeFloat, nil // integers load into a FLOAT column as they are
	}
	field := c.Field
	if field == "" {
		field = c.Name
	}
	return "", fmt.Errorf("column %s of table %s is %s, but field %q now holds values of type %s: "+
		"Snowflake cannot change a column's type in place; alter or drop the column, load the field into another table, "+
		"or declare its type with types = { %q = \"string\" }",
		quoteIdent(c.Name), table, have, field, c.Type, field)
}

// unionColumns merges the columns of the held batches in first-seen order.
// A column that is NUMBER in one batch and FLOAT in another becomes FLOAT;
// any other difference is an error.
func unionColumns(batches [][]column) ([]column, error) {
	var out []column
	at := map[string]int{}
	for _, cols := range batches {
		for _, c := range cols {
			i, ok := at[c.Name]
			if !ok {
				at[c.Name] = len(out)
				out = append(out, c)
				continue
			}
			prev := out[i].Type
			switch {
			case prev == c.Type:
			case (prev == typeNumber && c.Type == typeFloat) || (prev == typeFloat && c.Type == typeNumber):
				out[i].Type = typeFloat
			default:
				return nil, fmt.Errorf("field %q changed type within one load, from %s to %s: declare its type with types = { %q = \"string\" }, or fix the source",
					c.Field, prev, c.Type, c.Field)
			}
		}
	}
	return out, nil
}
