package arrowjson

import (
	"testing"

	"github.com/valyala/fastjson"
)

func BenchmarkRefFastjsonParse(b *testing.B) {
	var p fastjson.Parser
	line := []byte(sampleRecord)
	for i := 0; i < b.N; i++ {
		p.ParseBytes(line)
	}
}

func BenchmarkRefScan(b *testing.B) {
	var s scanner
	line := []byte(sampleRecord)
	for i := 0; i < b.N; i++ {
		s.scan(line)
	}
}
