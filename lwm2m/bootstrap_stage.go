package lwm2m

import (
	"slices"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// tree holds object instances resource by resource: object, instance,
// resource, then the resource's records (one for a single resource, one
// per resource instance for a multiple one). Bootstrap stages the
// configuration it is given in a tree; Provisioning is its flat form.
type tree map[uint16]map[uint16]map[uint16][]model.Record

// treeOf groups records (three- or four-level paths) by instance and resource.
func treeOf(recs []model.Record) tree {
	t := tree{}
	for _, r := range recs {
		if r.Path.Len() < 3 {
			continue
		}
		res := t.ensure(r.Path.Object(), r.Path.Instance())
		res[r.Path.Resource()] = append(res[r.Path.Resource()], r)
	}
	return t
}

// ensure returns the resources of /obj/inst, creating the instance.
func (t tree) ensure(obj, inst uint16) map[uint16][]model.Record {
	insts := t[obj]
	if insts == nil {
		insts = map[uint16]map[uint16][]model.Record{}
		t[obj] = insts
	}
	res := insts[inst]
	if res == nil {
		res = map[uint16][]model.Record{}
		insts[inst] = res
	}
	return res
}

// has reports whether /obj/inst exists.
func (t tree) has(obj, inst uint16) bool {
	_, ok := t[obj][inst]
	return ok
}

// instances lists the instances of obj in ascending order.
func (t tree) instances(obj uint16) []uint16 {
	ids := make([]uint16, 0, len(t[obj]))
	for id := range t[obj] {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// value returns the value of the single resource /obj/inst/res.
func (t tree) value(obj, inst, res uint16) (model.Value, bool) {
	recs := t[obj][inst][res]
	if len(recs) != 1 || recs[0].Path.Len() != 3 {
		return model.Value{}, false
	}
	return recs[0].Value, true
}

// records returns the records of the objects objs (all objects if none),
// sorted by path.
func (t tree) records(objs ...uint16) []model.Record {
	var out []model.Record
	for obj, insts := range t {
		if len(objs) > 0 && !slices.Contains(objs, obj) {
			continue
		}
		for _, res := range insts {
			for _, recs := range res {
				out = append(out, recs...)
			}
		}
	}
	sortRecords(out)
	return out
}

// clone copies t deeply enough that changes to either leave the other alone.
func (t tree) clone() tree {
	return treeOf(t.records())
}
