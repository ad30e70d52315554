// Command testminio builds the MinIO binary the tests use, if it is not
// cached yet, and prints its path: CI runs it before `go test` so that no
// test waits minutes for the build (go test's default timeout is 10m).
//
//	go run ./internal/testminio/cmd/testminio
package main

import (
	"fmt"
	"os"

	"github.com/pipelinehq/pipeline/internal/testminio"
)

func main() {
	bin, err := testminio.Binary()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testminio:", err)
		os.Exit(1)
	}
	fmt.Println(bin)
}
