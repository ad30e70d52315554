// Package sinks3 is the built-in `sink "s3"`: exports records as objects
// (Parquet, CSV, JSON Lines or JSON) to an S3 bucket or an S3-compatible
// store such as MinIO, with a manifest per flush. Objects are streamed as
// multipart uploads and become visible only when complete; a batch is acked
// once the flush that covers it has committed its objects and manifest.
package sinks3
