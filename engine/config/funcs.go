package config

import (
	"fmt"
	"os"
	"path/filepath"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// evalContext returns the functions available to expressions in a file that
// lives in dir. There are no variables yet: the empty map makes HCL answer a
// reference with "Unknown variable" rather than "Variables not allowed".
func (l *Loader) evalContext(dir string) *hcl.EvalContext {
	return &hcl.EvalContext{
		Variables: map[string]cty.Value{},
		Functions: map[string]function.Function{
			"env":  l.envFunc(nil),
			"file": l.fileFunc(dir),
		},
	}
}

// envFunc is env("NAME") or env("NAME", "default"). A variable that is set
// to the empty string is set: env returns "". With UnsetEnvEmpty, the name
// of each variable read as "" because it is not set is added to unset
// (when not nil).
func (l *Loader) envFunc(unset *[]string) function.Function {
	return function.New(&function.Spec{
		Description: "Returns the value of an environment variable, or the default when it is not set.",
		Params: []function.Parameter{{
			Name: "name",
			Type: cty.String,
		}},
		VarParam: &function.Parameter{
			Name: "default",
			Type: cty.String,
		},
		Type: function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			if len(args) > 2 {
				return cty.UnknownVal(cty.String), function.NewArgErrorf(2, "env takes a name and at most one default")
			}
			name := args[0].AsString()
			if v, ok := l.lookupEnv(name); ok {
				return cty.StringVal(v), nil
			}
			if len(args) == 2 {
				return args[1], nil
			}
			if l.UnsetEnvEmpty {
				if unset != nil {
					*unset = append(*unset, name)
				}
				return cty.StringVal(""), nil
			}
			return cty.UnknownVal(cty.String), fmt.Errorf("environment variable %s is not set; set it, or give a default: env(%q, \"...\")", name, name)
		},
	})
}

// fileFunc is file("path"): the contents of a UTF-8 text file, with a relative
// path taken from the directory of the pipeline file that calls it.
func (l *Loader) fileFunc(dir string) function.Function {
	return function.New(&function.Spec{
		Description: "Returns the contents of a text file; a relative path is taken from the pipeline file's directory.",
		Params: []function.Parameter{{
			Name: "path",
			Type: cty.String,
		}},
		Type: function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			path := args[0].AsString()
			if !filepath.IsAbs(path) {
				path = filepath.Join(dir, path)
			}
			b, err := l.readFile(path)
			if err != nil {
				return cty.UnknownVal(cty.String), function.NewArgError(0, err)
			}
			if !utf8.Valid(b) {
				return cty.UnknownVal(cty.String), function.NewArgErrorf(0, "%s is not UTF-8 text", path)
			}
			return cty.StringVal(string(b)), nil
		},
	})
}

func (l *Loader) lookupEnv(name string) (string, bool) {
	if l.LookupEnv != nil {
		return l.LookupEnv(name)
	}
	return os.LookupEnv(name)
}

func (l *Loader) readFile(name string) ([]byte, error) {
	if l.ReadFile != nil {
		return l.ReadFile(name)
	}
	return os.ReadFile(name)
}
