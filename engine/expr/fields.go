package expr

// Fields returns the field paths an expression reads, such as
// [classifications churn_risk label]. The runner uses it to give a batch
// that lacks a field (a source that has not produced it yet) a null column
// for it, so that the field reads as null instead of failing to compile.
// An expression that reads the whole record ($env) reports no paths.
func Fields(src string) ([][]string, error) {
	tree, err := checkSource(src, nil)
	if err != nil {
		return nil, err
	}
	paths, _ := collectPaths(tree.Node)
	return paths, nil
}

// TemplateFields is Fields for the placeholders of a template.
func TemplateFields(src string) ([][]string, error) {
	parts, err := splitTemplate(src)
	if err != nil {
		return nil, err
	}
	var out [][]string
	for _, p := range parts {
		if !p.isExpr {
			continue
		}
		paths, err := Fields(p.expr)
		if err != nil {
			return nil, err
		}
		out = append(out, paths...)
	}
	return out, nil
}
