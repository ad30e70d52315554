package sourcepostgres

import (
	"errors"
	"fmt"
	"strings"
)

// parseTable splits "table" or "schema.table" into its names.
func parseTable(s string) ([]string, error) {
	parts := strings.Split(s, ".")
	if len(parts) > 2 {
		return nil, fmt.Errorf(`table %q: write "table" or "schema.table" (names with dots: use query)`, s)
	}
	for _, p := range parts {
		if strings.TrimSpace(p) == "" {
			return nil, fmt.Errorf(`table %q: write "table" or "schema.table"`, s)
		}
		if len(p) > 63 {
			return nil, fmt.Errorf("table %q: names are at most 63 bytes in PostgreSQL", s)
		}
	}
	return parts, nil
}

// cleanQuery checks a query's text and drops a trailing semicolon. The
// source wraps the query as a subquery and adds its own WHERE, ORDER BY and
// LIMIT, so the query must not order or limit its rows itself.
func cleanQuery(q string) (string, error) {
	q = strings.TrimSpace(q)
	for strings.HasSuffix(q, ";") {
		q = strings.TrimSpace(strings.TrimSuffix(q, ";"))
	}
	if q == "" {
		return "", errors.New("query must not be empty")
	}
	words := topLevelWords(q)
	for i, w := range words {
		switch {
		case w == "order" && i+1 < len(words) && words[i+1] == "by":
			return "", errors.New("query: leave out ORDER BY; the source orders the rows by cursor and key itself")
		case w == "limit", w == "offset", w == "fetch":
			return "", fmt.Errorf("query: leave out %s; the source reads the rows after its position in batches itself, and a limit would stop incremental reads", strings.ToUpper(w))
		case w == ";":
			return "", errors.New("query: write one SELECT statement")
		}
	}
	return q, nil
}

// topLevelWords are the lower-cased words of q outside parentheses, string
// literals, quoted identifiers, dollar quotes and comments, and ";" for a
// semicolon there.
func topLevelWords(q string) []string {
	var out []string
	depth := 0
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == '-' && strings.HasPrefix(q[i:], "--"):
			j := strings.IndexByte(q[i:], '\n')
			if j < 0 {
				return out
			}
			i += j + 1
		case c == '/' && strings.HasPrefix(q[i:], "/*"):
			// Nested block comments, as PostgreSQL has them.
			n, j := 0, i
			for j < len(q) {
				if strings.HasPrefix(q[j:], "/*") {
					n, j = n+1, j+2
				} else if strings.HasPrefix(q[j:], "*/") {
					n, j = n-1, j+2
					if n == 0 {
						break
					}
				} else {
					j++
				}
			}
			i = j
		case c == '\'' || c == '"':
			j := i + 1
			for j < len(q) {
				if q[j] == c {
					if j+1 < len(q) && q[j+1] == c {
						j += 2
						continue
					}
					break
				}
				if c == '\'' && q[j] == '\\' && i > 0 && (q[i-1] == 'e' || q[i-1] == 'E') {
					j++ // E'...\'...'
				}
				j++
			}
			i = j + 1
		case c == '$':
			// $tag$ ... $tag$, or a parameter $1.
			j := i + 1
			for j < len(q) && (isWordByte(q[j]) && !(j == i+1 && q[j] >= '0' && q[j] <= '9')) {
				j++
			}
			if j < len(q) && q[j] == '$' {
				tag := q[i : j+1]
				if k := strings.Index(q[j+1:], tag); k >= 0 {
					i = j + 1 + k + len(tag)
				} else {
					return out
				}
			} else {
				i = j
			}
		case c == '(':
			depth++
			i++
		case c == ')':
			depth--
			i++
		case c == ';':
			if depth == 0 {
				out = append(out, ";")
			}
			i++
		case isWordByte(c):
			j := i
			for j < len(q) && isWordByte(q[j]) {
				j++
			}
			if depth == 0 {
				out = append(out, strings.ToLower(q[i:j]))
			}
			i = j
		default:
			i++
		}
	}
	return out
}

func isWordByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}
