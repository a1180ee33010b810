package lwm2m

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// Static is an Object held in memory, for the simple cases: constants such
// as a model number, values the application sets as they change, and
// executable resources backed by a function. It is safe for concurrent use.
//
// The server may write resources that allow OpWrite; the application sees
// those writes through OnWrite, if it sets a hook.
type Static struct {
	id       uint16
	version  string
	defs     []Resource // sorted by ID
	mu       sync.RWMutex
	inst     map[uint16]map[uint16][]model.Record
	exec     map[uint16]func(ctx context.Context, inst uint16, args string) error
	onWrite  func(ctx context.Context, p model.Path, recs []model.Record) error
	notifier notifier
}

// NewStatic returns an object with ID id and the given resources. version
// is the object version ("" for 1.0).
func NewStatic(id uint16, version string, defs ...Resource) *Static {
	defs = slices.Clone(defs)
	slices.SortFunc(defs, func(a, b Resource) int { return int(a.ID) - int(b.ID) })
	return &Static{
		id:      id,
		version: version,
		defs:    defs,
		inst:    make(map[uint16]map[uint16][]model.Record),
		exec:    make(map[uint16]func(context.Context, uint16, string) error),
	}
}

func (s *Static) ID() uint16 { return s.id }

// Version implements Versioner.
func (s *Static) Version() string { return s.version }

func (s *Static) setNotifier(n notifier) {
	s.mu.Lock()
	s.notifier = n
	s.mu.Unlock()
}

func (s *Static) def(res uint16) (Resource, bool) {
	i, ok := slices.BinarySearchFunc(s.defs, res, func(r Resource, id uint16) int { return int(r.ID) - int(id) })
	if !ok {
		return Resource{}, false
	}
	return s.defs[i], true
}

// AddInstance creates instance inst with no values set.
func (s *Static) AddInstance(inst uint16) {
	s.mu.Lock()
	_, had := s.inst[inst]
	if !had {
		s.inst[inst] = make(map[uint16][]model.Record)
	}
	n := s.notifier
	s.mu.Unlock()
	if !had && n != nil {
		n.Changed(model.NewPath(s.id))
	}
}

// Set sets a single-instance resource, creating the instance if needed, and
// notifies observers if the value changed. It panics if res was not
// declared; that is a programming error.
func (s *Static) Set(inst, res uint16, v model.Value) {
	p := model.NewPath(s.id, inst, res)
	s.store(p, []model.Record{{Path: p, Value: v}})
}

// SetMulti sets all instances of a multiple resource.
func (s *Static) SetMulti(inst, res uint16, vals map[uint16]model.Value) {
	p := model.NewPath(s.id, inst, res)
	recs := make([]model.Record, 0, len(vals))
	for ri, v := range vals {
		recs = append(recs, model.Record{Path: p.Append(ri), Value: v})
	}
	slices.SortFunc(recs, func(a, b model.Record) int { return int(a.Path.ResourceInstance()) - int(b.Path.ResourceInstance()) })
	s.store(p, recs)
}

func (s *Static) store(p model.Path, recs []model.Record) {
	d, ok := s.def(p.Resource())
	if !ok {
		panic(fmt.Sprintf("lwm2m: resource %v not declared", p))
	}
	for i := range recs {
		if v, err := recs[i].Value.Convert(d.Type); err == nil {
			recs[i].Value = v
		}
	}
	s.mu.Lock()
	m := s.inst[p.Instance()]
	created := m == nil
	if created {
		m = make(map[uint16][]model.Record)
		s.inst[p.Instance()] = m
	}
	changed := !slices.EqualFunc(m[p.Resource()], recs, model.Record.Equal)
	m[p.Resource()] = recs
	n := s.notifier
	s.mu.Unlock()
	if n == nil {
		return
	}
	if created {
		n.Changed(model.NewPath(s.id))
	}
	if changed {
		n.Changed(p)
	}
}

// Get returns a single-instance resource's value.
func (s *Static) Get(inst, res uint16) (model.Value, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	recs := s.inst[inst][res]
	if len(recs) != 1 || recs[0].Path.Len() != 3 {
		return model.Value{}, false
	}
	return recs[0].Value, true
}

// OnExecute makes res executable by f.
func (s *Static) OnExecute(res uint16, f func(ctx context.Context, inst uint16, args string) error) {
	s.mu.Lock()
	s.exec[res] = f
	s.mu.Unlock()
}

// OnWrite sets a hook that sees each server write before it is stored; an
// error rejects the write.
func (s *Static) OnWrite(f func(ctx context.Context, p model.Path, recs []model.Record) error) {
	s.mu.Lock()
	s.onWrite = f
	s.mu.Unlock()
}

func (s *Static) Instances() []uint16 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ids := make([]uint16, 0, len(s.inst))
	for id := range s.inst {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Resources lists the declared resources that have a value, plus every
// one the server cannot read (executable or write-only), which never has.
func (s *Static) Resources(inst uint16) []Resource {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, ok := s.inst[inst]
	if !ok {
		return nil
	}
	var out []Resource
	for _, d := range s.defs {
		if _, set := m[d.ID]; set || d.Ops&OpRead == 0 {
			out = append(out, d)
		}
	}
	return out
}

func (s *Static) Read(_ context.Context, res model.Path) ([]model.Record, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, ok := s.inst[res.Instance()]
	if !ok {
		return nil, ErrNotFound
	}
	recs, ok := m[res.Resource()]
	if !ok {
		return nil, ErrNotFound
	}
	return slices.Clone(recs), nil
}

// Write implements Writer for resources declared with OpWrite.
func (s *Static) Write(ctx context.Context, p model.Path, recs []model.Record) error {
	d, ok := s.def(p.Resource())
	if !ok {
		return ErrNotFound
	}
	if d.Ops&OpWrite == 0 {
		return ErrMethodNotAllowed
	}
	s.mu.RLock()
	hook := s.onWrite
	s.mu.RUnlock()
	if hook != nil {
		if err := hook(ctx, p, recs); err != nil {
			return err
		}
	}
	res := p.Truncate(3)
	if p.Len() == 4 {
		// One resource instance: merge it into the others.
		s.mu.RLock()
		old := slices.Clone(s.inst[p.Instance()][p.Resource()])
		s.mu.RUnlock()
		old = slices.DeleteFunc(old, func(r model.Record) bool { return r.Path == p })
		recs = append(old, recs...)
		slices.SortFunc(recs, func(a, b model.Record) int { return int(a.Path.ResourceInstance()) - int(b.Path.ResourceInstance()) })
	}
	s.store(res, slices.Clone(recs))
	return nil
}

// Execute implements Executor.
func (s *Static) Execute(ctx context.Context, res model.Path, args string) error {
	s.mu.RLock()
	f := s.exec[res.Resource()]
	_, ok := s.inst[res.Instance()]
	s.mu.RUnlock()
	if !ok {
		return ErrNotFound
	}
	if f == nil {
		return ErrMethodNotAllowed
	}
	return f(ctx, res.Instance(), args)
}

// RemoveInstance deletes instance inst and its values.
func (s *Static) RemoveInstance(inst uint16) {
	s.mu.Lock()
	_, had := s.inst[inst]
	delete(s.inst, inst)
	n := s.notifier
	s.mu.Unlock()
	if had && n != nil {
		n.Changed(model.NewPath(s.id))
	}
}

// load stores one record of a provisioning: a resource, or one instance
// of a multiple resource, merged with the others.
func (s *Static) load(r model.Record) error {
	d, ok := s.def(r.Path.Resource())
	if !ok {
		return ErrNotFound
	}
	v, err := r.Value.Convert(d.Type)
	if err != nil {
		return err
	}
	r.Value = v
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.inst[r.Path.Instance()]
	if m == nil {
		m = make(map[uint16][]model.Record)
		s.inst[r.Path.Instance()] = m
	}
	if r.Path.Len() == 3 {
		m[d.ID] = []model.Record{r}
		return nil
	}
	recs := slices.DeleteFunc(m[d.ID], func(o model.Record) bool { return o.Path == r.Path || o.Path.Len() == 3 })
	recs = append(recs, r)
	slices.SortFunc(recs, func(a, b model.Record) int { return int(a.Path.ResourceInstance()) - int(b.Path.ResourceInstance()) })
	m[d.ID] = recs
	return nil
}

// records returns every value held, sorted by instance and resource.
func (s *Static) records() []model.Record {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []model.Record
	for _, m := range s.inst {
		for _, recs := range m {
			out = append(out, recs...)
		}
	}
	return out
}
