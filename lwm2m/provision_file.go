package lwm2m

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/lwm2m-fota/lwm2m/internal/atomicfile"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// ErrCorruptProvisioning reports a provisioning file that exists but
// cannot be read back: damaged, truncated, edited by hand or written by a
// newer version. The client refuses to start from it rather than take it
// for "never provisioned" and bootstrap over it without a word.
var ErrCorruptProvisioning = errors.New("lwm2m: provisioning file is damaged")

// provisioningFormat names the file's content, and provisioningVersion
// its layout; a reader refuses a version it does not know.
const (
	provisioningFormat  = "lwm2m-provisioning"
	provisioningVersion = 1
)

// NewFileProvisioningStore keeps the configuration in the file path, in
// JSON with a checksum, replaced atomically (write beside, fsync, rename,
// fsync the directory) so that a crash leaves the old configuration or
// the new one. The file holds keys: it is created with mode 0600 and its
// directory, if missing, with 0700.
func NewFileProvisioningStore(path string) ProvisioningStore {
	return &fileProvisioningStore{path: path}
}

type fileProvisioningStore struct {
	path string
	mu   sync.Mutex
}

// provisioningFile is the file's layout. Records holds the records as
// written, so that the checksum covers exactly those bytes.
type provisioningFile struct {
	Format  string          `json:"format"`
	Version int             `json:"version"`
	SHA256  string          `json:"sha256"`
	Records json.RawMessage `json:"records"`
}

// fileRecord is one record: the path, the type's name and the value in
// the JSON form natural for the type (opaque in base64, integers as
// decimal strings so that no JSON reader rounds them).
type fileRecord struct {
	Path  string `json:"path"`
	Type  string `json:"type"`
	Value string `json:"value"`
}

func (s *fileProvisioningStore) Load(ctx context.Context) (Provisioning, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeTemporaries()
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return Provisioning{}, ErrNotProvisioned
	}
	if err != nil {
		return Provisioning{}, fmt.Errorf("lwm2m: provisioning file: %w", err)
	}
	p, err := decodeProvisioning(data)
	if err != nil {
		return Provisioning{}, fmt.Errorf("%w: %s: %w", ErrCorruptProvisioning, s.path, err)
	}
	return p, nil
}

func (s *fileProvisioningStore) Save(ctx context.Context, p Provisioning) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	data, err := encodeProvisioning(p)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return fmt.Errorf("lwm2m: provisioning file: %w", err)
	}
	if err := atomicfile.WriteFile(s.path, data, 0o600); err != nil {
		return fmt.Errorf("lwm2m: save provisioning: %w", err)
	}
	return nil
}

// removeTemporaries drops what a crash during Save left beside the file.
func (s *fileProvisioningStore) removeTemporaries() {
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(s.path), atomicfile.TempPattern(s.path)))
	for _, f := range left {
		os.Remove(f)
	}
}

func encodeProvisioning(p Provisioning) ([]byte, error) {
	recs := make([]fileRecord, 0, len(p.Records))
	for _, r := range p.Records {
		v, err := fileValue(r.Value)
		if err != nil {
			return nil, fmt.Errorf("lwm2m: save provisioning: %s: %w", r.Path, err)
		}
		recs = append(recs, fileRecord{Path: r.Path.String(), Type: r.Value.Type.String(), Value: v})
	}
	body, err := json.Marshal(recs)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	out, err := json.MarshalIndent(provisioningFile{
		Format: provisioningFormat, Version: provisioningVersion,
		SHA256: hex.EncodeToString(sum[:]), Records: body,
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

func decodeProvisioning(data []byte) (Provisioning, error) {
	var f provisioningFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return Provisioning{}, fmt.Errorf("not JSON of the expected layout: %w", err)
	}
	switch {
	case f.Format != provisioningFormat:
		return Provisioning{}, fmt.Errorf("format %q, want %q", f.Format, provisioningFormat)
	case f.Version != provisioningVersion:
		return Provisioning{}, fmt.Errorf("version %d, this program reads version %d", f.Version, provisioningVersion)
	}
	// MarshalIndent re-indented the records: compact them back to the
	// bytes the checksum was taken over.
	var compact bytes.Buffer
	if err := json.Compact(&compact, f.Records); err != nil {
		return Provisioning{}, err
	}
	if sum := sha256.Sum256(compact.Bytes()); hex.EncodeToString(sum[:]) != f.SHA256 {
		return Provisioning{}, errors.New("checksum mismatch")
	}
	var recs []fileRecord
	if err := json.Unmarshal(compact.Bytes(), &recs); err != nil {
		return Provisioning{}, err
	}
	p := Provisioning{Records: make([]model.Record, 0, len(recs))}
	for _, fr := range recs {
		path, err := model.ParsePath(fr.Path)
		if err != nil || path.Len() < 3 {
			return Provisioning{}, fmt.Errorf("record path %q", fr.Path)
		}
		v, err := parseFileValue(fr.Type, fr.Value)
		if err != nil {
			return Provisioning{}, fmt.Errorf("%s: %w", fr.Path, err)
		}
		p.Records = append(p.Records, model.Record{Path: path, Value: v})
	}
	sortRecords(p.Records)
	return p, nil
}

func fileValue(v model.Value) (string, error) {
	switch v.Type {
	case model.TypeString, model.TypeCorelnk:
		return v.Str, nil
	case model.TypeInteger, model.TypeTime:
		return strconv.FormatInt(v.Int, 10), nil
	case model.TypeUnsigned:
		return strconv.FormatUint(v.Uint, 10), nil
	case model.TypeFloat:
		return strconv.FormatFloat(v.Float, 'g', -1, 64), nil
	case model.TypeBoolean:
		return strconv.FormatBool(v.Bool), nil
	case model.TypeOpaque:
		return base64.StdEncoding.EncodeToString(v.Bytes), nil
	case model.TypeObjlnk:
		return v.Link.String(), nil
	}
	return "", fmt.Errorf("a value of type %s cannot be stored", v.Type)
}

func parseFileValue(typ, s string) (model.Value, error) {
	var v model.Value
	var err error
	switch typ {
	case "string":
		v = model.String(s)
	case "corelnk":
		v = model.Corelnk(s)
	case "integer", "time":
		var i int64
		i, err = strconv.ParseInt(s, 10, 64)
		v = model.Int(i)
		if typ == "time" {
			v.Type = model.TypeTime
		}
	case "unsigned":
		var u uint64
		u, err = strconv.ParseUint(s, 10, 64)
		v = model.Uint(u)
	case "float":
		var f float64
		f, err = strconv.ParseFloat(s, 64)
		v = model.Float(f)
	case "boolean":
		var b bool
		b, err = strconv.ParseBool(s)
		v = model.Bool(b)
	case "opaque":
		var b []byte
		b, err = base64.StdEncoding.DecodeString(s)
		v = model.Opaque(b)
	case "objlnk":
		var l model.ObjLink
		l, err = model.ParseObjLink(s)
		v = model.Value{Type: model.TypeObjlnk, Link: l}
	default:
		return model.Value{}, fmt.Errorf("unknown type %q", typ)
	}
	if err != nil {
		return model.Value{}, fmt.Errorf("a %s value that does not parse", typ) // never quote it: it may be a key
	}
	return v, nil
}
