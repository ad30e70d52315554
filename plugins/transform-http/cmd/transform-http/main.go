// Command transform-http serves the built-in `transform "http"` as a
// stand-alone plugin process (the pipeline binary serves it as `pipeline
// plugin serve transform-http`); the plugin's tests start it this way.
package main

import (
	"github.com/pipelinehq/pipeline/sdk"

	transformhttp "github.com/pipelinehq/pipeline/plugins/transform-http"
)

func main() { sdk.Serve(&transformhttp.Transform{}) }
