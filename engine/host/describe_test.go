package host

import (
	"testing"

	"github.com/pipelinehq/pipeline/sdk"
)

// What a plugin says of itself reaches the engine as it said it: a push
// source's Push capability included.
func TestDescribeCarriesPush(t *testing.T) {
	for _, push := range []bool{false, true} {
		resp, err := sdk.DescribeProto(sdk.Info{Kind: sdk.KindSource, Type: "http", Version: "1", Push: push})
		if err != nil {
			t.Fatal(err)
		}
		info, err := InfoFromProto(resp)
		if err != nil {
			t.Fatal(err)
		}
		if info.Push != push {
			t.Errorf("Push %v came back %v", push, info.Push)
		}
	}
}
