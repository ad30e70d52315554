package sinkbigquery

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	bq "google.golang.org/api/bigquery/v2"
)

// fakeBQ speaks the part of BigQuery's REST API the sink uses: datasets
// and tables get/insert/patch/delete, jobs insert (multipart and resumable
// uploads for loads) and get, getQueryResults, and 409 duplicate for a
// job id that exists.
type fakeBQ struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	datasets map[string]*bq.Dataset
	tables   map[string]*bq.Table // "dataset.table"
	jobs     map[string]*bq.Job
	uploads  map[string][]byte // load job id → Parquet bytes
	pending  map[string]*bq.Job
	pendBody map[string]*bytes.Buffer
	order    []string // job ids inserted, in order
	requests []string // "METHOD path"
	dups     int
	// failJob makes the job with this id end with an error.
	failJob map[string]string
	// failInsert makes the next insert of a job whose id has this prefix
	// fail with a 400 once.
	failInsert map[string]bool
	// echo is put into every 404's message (to test redaction).
	echo string
	auth []string
	// onQuery, when set, runs a query job's SQL (called with mu held); an
	// error fails the job.
	onQuery func(sql string) error
}

func newFakeBQ(t *testing.T) *fakeBQ {
	f := &fakeBQ{t: t, datasets: map[string]*bq.Dataset{}, tables: map[string]*bq.Table{}, jobs: map[string]*bq.Job{},
		uploads: map[string][]byte{}, pending: map[string]*bq.Job{}, pendBody: map[string]*bytes.Buffer{},
		failJob: map[string]string{}, failInsert: map[string]bool{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeBQ) apiErr(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code": code, "message": msg, "errors": []map[string]any{{"reason": reason, "message": msg}},
	}})
}

func (f *fakeBQ) reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

var (
	reDataset  = regexp.MustCompile(`^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)$`)
	reDatasets = regexp.MustCompile(`^/bigquery/v2/projects/([^/]+)/datasets$`)
	reTable    = regexp.MustCompile(`^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)$`)
	reTables   = regexp.MustCompile(`^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables$`)
	reJobs     = regexp.MustCompile(`^(/upload)?/bigquery/v2/projects/([^/]+)/jobs$`)
	reJob      = regexp.MustCompile(`^/bigquery/v2/projects/([^/]+)/jobs/([^/]+)$`)
	reQuery    = regexp.MustCompile(`^/bigquery/v2/projects/([^/]+)/queries/([^/]+)$`)
)

func (f *fakeBQ) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := r.URL.Path
	f.requests = append(f.requests, r.Method+" "+p)
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	notFound := func(what string) {
		f.apiErr(w, 404, "notFound", "Not found: "+what+f.echo)
	}
	switch {
	case r.URL.Query().Get("upload_id") != "" && r.Method == http.MethodPut:
		f.resumeUpload(w, r)
	case reDataset.MatchString(p) && r.Method == http.MethodGet:
		m := reDataset.FindStringSubmatch(p)
		if d, ok := f.datasets[m[2]]; ok {
			f.reply(w, d)
			return
		}
		notFound("Dataset " + m[1] + ":" + m[2])
	case reDatasets.MatchString(p) && r.Method == http.MethodPost:
		var d bq.Dataset
		json.NewDecoder(r.Body).Decode(&d)
		if _, ok := f.datasets[d.DatasetReference.DatasetId]; ok {
			f.apiErr(w, 409, "duplicate", "Already Exists")
			return
		}
		f.datasets[d.DatasetReference.DatasetId] = &d
		f.reply(w, &d)
	case reTable.MatchString(p):
		m := reTable.FindStringSubmatch(p)
		key := m[2] + "." + m[3]
		t, ok := f.tables[key]
		if !ok {
			notFound("Table " + m[1] + ":" + key)
			return
		}
		switch r.Method {
		case http.MethodGet:
			f.reply(w, t)
		case http.MethodPatch, http.MethodPut:
			var u bq.Table
			json.NewDecoder(r.Body).Decode(&u)
			if u.Schema != nil {
				t.Schema = u.Schema
			}
			t.Etag = fmt.Sprintf("etag%d", len(f.requests))
			f.reply(w, t)
		case http.MethodDelete:
			delete(f.tables, key)
			w.WriteHeader(204)
		}
	case reTables.MatchString(p) && r.Method == http.MethodPost:
		var t bq.Table
		json.NewDecoder(r.Body).Decode(&t)
		key := t.TableReference.DatasetId + "." + t.TableReference.TableId
		if _, ok := f.datasets[t.TableReference.DatasetId]; !ok {
			notFound("Dataset " + t.TableReference.DatasetId)
			return
		}
		if _, ok := f.tables[key]; ok {
			f.apiErr(w, 409, "duplicate", "Already Exists: Table "+key)
			return
		}
		t.Etag = "etag0"
		f.tables[key] = &t
		f.reply(w, &t)
	case reJobs.MatchString(p) && r.Method == http.MethodPost:
		f.insertJob(w, r)
	case reJob.MatchString(p) && r.Method == http.MethodGet:
		m := reJob.FindStringSubmatch(p)
		j, ok := f.jobs[m[2]]
		if !ok {
			notFound("Job " + m[2])
			return
		}
		f.reply(w, j)
	case reQuery.MatchString(p) && r.Method == http.MethodGet:
		m := reQuery.FindStringSubmatch(p)
		j, ok := f.jobs[m[2]]
		if !ok {
			notFound("Job " + m[2])
			return
		}
		if j.Status.ErrorResult != nil {
			f.apiErr(w, 400, j.Status.ErrorResult.Reason, j.Status.ErrorResult.Message)
			return
		}
		f.reply(w, &bq.GetQueryResultsResponse{JobComplete: true, JobReference: j.JobReference, TotalRows: 0})
	default:
		f.t.Errorf("fake BigQuery: unexpected request %s %s", r.Method, r.URL)
		f.apiErr(w, 400, "invalid", "unexpected request")
	}
}

func (f *fakeBQ) insertJob(w http.ResponseWriter, r *http.Request) {
	var job bq.Job
	var media []byte
	switch r.URL.Query().Get("uploadType") {
	case "multipart":
		_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil {
			f.apiErr(w, 400, "invalid", err.Error())
			return
		}
		mr := multipart.NewReader(r.Body, params["boundary"])
		part, err := mr.NextPart()
		if err != nil {
			f.apiErr(w, 400, "invalid", err.Error())
			return
		}
		json.NewDecoder(part).Decode(&job)
		part, err = mr.NextPart()
		if err != nil {
			f.apiErr(w, 400, "invalid", err.Error())
			return
		}
		media, _ = io.ReadAll(part)
	case "resumable":
		json.NewDecoder(r.Body).Decode(&job)
		if f.rejectJob(w, &job) {
			return
		}
		id := fmt.Sprintf("u%d", len(f.pending)+1)
		f.pending[id] = &job
		f.pendBody[id] = &bytes.Buffer{}
		w.Header().Set("Location", f.srv.URL+r.URL.Path+"?uploadType=resumable&upload_id="+id)
		w.WriteHeader(200)
		return
	default:
		json.NewDecoder(r.Body).Decode(&job)
	}
	if f.rejectJob(w, &job) {
		return
	}
	f.finishJob(w, &job, media)
}

// rejectJob answers a duplicate id or an injected failure.
func (f *fakeBQ) rejectJob(w http.ResponseWriter, job *bq.Job) bool {
	id := job.JobReference.JobId
	if _, ok := f.jobs[id]; ok {
		f.dups++
		f.apiErr(w, 409, "duplicate", "Already Exists: Job "+job.JobReference.ProjectId+":US."+id)
		return true
	}
	for prefix := range f.failInsert {
		if strings.HasPrefix(id, prefix) {
			delete(f.failInsert, prefix)
			f.apiErr(w, 400, "invalidQuery", "injected failure"+f.echo)
			return true
		}
	}
	return false
}

func (f *fakeBQ) resumeUpload(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("upload_id")
	buf, ok := f.pendBody[id]
	if !ok {
		f.apiErr(w, 404, "notFound", "upload")
		return
	}
	io.Copy(buf, r.Body)
	cr := r.Header.Get("Content-Range") // bytes a-b/total or bytes */total or bytes a-b/*
	if strings.HasSuffix(cr, "/*") {
		w.Header().Set("Range", fmt.Sprintf("bytes=0-%d", buf.Len()-1))
		w.WriteHeader(308)
		return
	}
	job := f.pending[id]
	delete(f.pending, id)
	delete(f.pendBody, id)
	if f.rejectJob(w, job) {
		return
	}
	f.finishJob(w, job, buf.Bytes())
}

func (f *fakeBQ) finishJob(w http.ResponseWriter, job *bq.Job, media []byte) {
	id := job.JobReference.JobId
	job.Status = &bq.JobStatus{State: "DONE"}
	if msg, ok := f.failJob[id]; ok {
		job.Status.ErrorResult = &bq.ErrorProto{Reason: "invalid", Message: msg}
	} else if q := job.Configuration.Query; q != nil && f.onQuery != nil {
		if err := f.onQuery(q.Query); err != nil {
			job.Status.ErrorResult = &bq.ErrorProto{Reason: "invalidQuery", Message: err.Error()}
		}
	}
	job.Id = job.JobReference.ProjectId + ":US." + id
	f.jobs[id] = job
	f.order = append(f.order, id)
	if media != nil {
		f.uploads[id] = media
		if l := job.Configuration.Load; l != nil && job.Status.ErrorResult == nil {
			key := l.DestinationTable.DatasetId + "." + l.DestinationTable.TableId
			if _, ok := f.tables[key]; !ok {
				f.tables[key] = &bq.Table{TableReference: l.DestinationTable, Schema: l.Schema, Etag: "etag0"}
			}
		}
	}
	f.reply(w, job)
}

// parquetRows decodes Parquet bytes into rows of Go values.
func parquetRows(t *testing.T, data []byte) (*arrow.Schema, []map[string]any) {
	t.Helper()
	rdr, err := file.NewParquetReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("parquet: %v", err)
	}
	fr, err := pqarrow.NewFileReader(rdr, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Release()
	var rows []map[string]any
	n := int(tbl.NumRows())
	for i := 0; i < n; i++ {
		rows = append(rows, map[string]any{})
	}
	for c := 0; c < int(tbl.NumCols()); c++ {
		col := tbl.Column(c)
		row := 0
		for _, chunk := range col.Data().Chunks() {
			for i := 0; i < chunk.Len(); i++ {
				var v any
				if chunk.IsValid(i) {
					json.Unmarshal([]byte(mustJSON(chunk.GetOneForMarshal(i))), &v)
				}
				rows[row][col.Name()] = v
				row++
			}
		}
	}
	return tbl.Schema(), rows
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
