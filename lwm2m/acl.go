package lwm2m

import (
	"context"
	"slices"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Access Control (/2) is a layer between request handling and the
// objects: serve asks it before any object sees a request, and the
// notifications of an observation ask it again before each is sent
// (LwM2M 1.1 Core §7.3.2.5). Its rules are those of LwM2M 1.1 Core §7.3:
//
//   - With a single LwM2M server account the server has every right on
//     every instance without an Access Control instance (§7).
//   - Otherwise an operation on an object instance needs the right in the
//     ACL of the Access Control instance of that object instance: the
//     resource instance named by the server's Short Server ID, or else,
//     for a server that is not the owner, the default ACL (resource
//     instance 0). The Access Control Owner without an ACL of its own has
//     every right. Without an Access Control instance, or an ACL that
//     applies, the server has no right: 4.01 Unauthorized (§7.3.2.1).
//   - Read, Observe and Write-Attributes need R, Write W, Execute E,
//     Delete D; Discover needs only that some right can be obtained, and
//     none on an object (§7.3.2, §7.3.2.4).
//   - Create needs C in the ACL of the Access Control instance of the
//     object (Object Instance ID 65535), which only bootstrap writes
//     (§7.3.1.2.1). An instance a server creates gets an Access Control
//     instance with that server as owner; deleting the instance deletes it.
//   - Read and Observe of a whole object return the instances the server
//     may read (§7.3.2.4); Write-Attributes and Discover of an object are
//     allowed.
//   - Security (/0) is never accessible to LwM2M servers (§E.1).
//   - Access Control instances are read by any server and managed (Write)
//     only by their owner; one owned by 65535 only by bootstrap (§E.3).
//     Servers never create or delete them: the client does.
//
// One extension, as Anjay has it: without an Access Control instance, a
// server may read, write and execute its own Server instance (the one
// with its Short Server ID), so that Registration Update Trigger and
// Disable work in a configuration that gave /1 no ACL.

// Access Control resources (LwM2M 1.1 Core §E.3).
const (
	aclObjectID   = 0
	aclInstanceID = 1
	aclACL        = 2
	aclOwner      = 3
)

// Access rights, the bits of an ACL value (LwM2M 1.1 Core §E.3).
const (
	RightRead    = 1 << 0 // Read, Observe, Discover, Write-Attributes
	RightWrite   = 1 << 1
	RightExecute = 1 << 2
	RightDelete  = 1 << 3
	RightCreate  = 1 << 4

	rightsAll = RightRead | RightWrite | RightExecute | RightDelete
)

// maxID is MAX_ID, the Object Instance ID of an object-level Access
// Control instance and the owner meaning "bootstrap only".
const maxID = 65535

func newACLObject() *Static {
	o := NewStatic(2, "", // the 1.0 resources: the same in both versions
		Resource{ID: aclObjectID, Type: model.MustCoreType(2, aclObjectID), Ops: OpRead},
		Resource{ID: aclInstanceID, Type: model.MustCoreType(2, aclInstanceID), Ops: OpRead},
		Resource{ID: aclACL, Type: model.MustCoreType(2, aclACL), Ops: OpRW, Multiple: true},
		Resource{ID: aclOwner, Type: model.MustCoreType(2, aclOwner), Ops: OpRW},
	)
	o.OnWrite(func(_ context.Context, p model.Path, recs []model.Record) error {
		for _, r := range recs {
			switch p.Resource() {
			case aclACL:
				if r.Value.Int < 0 || r.Value.Int > 31 {
					return ErrBadRequest
				}
			case aclOwner:
				if r.Value.Int < 0 || r.Value.Int > maxID {
					return ErrBadRequest
				}
			}
		}
		return nil
	})
	return o
}

// multiServer reports whether the client has more than one LwM2M server
// account, where access control applies to every instance.
func (c *Client) multiServer() bool {
	return len(c.serverObject().Instances()) > 1
}

// aclInstanceOf finds the Access Control instance of /obj/inst.
func aclInstanceOf(acl *Static, obj, inst uint16) (uint16, bool) {
	for _, y := range acl.Instances() {
		o, ok1 := acl.Get(y, aclObjectID)
		i, ok2 := acl.Get(y, aclInstanceID)
		if ok1 && ok2 && o.Int == int64(obj) && i.Int == int64(inst) {
			return y, true
		}
	}
	return 0, false
}

// rights returns the access right of server ssid on /obj/inst, and false
// when none can be obtained (LwM2M 1.1 Core §7.3.2.1).
func (c *Client) rights(ssid, obj, inst uint16) (int64, bool) {
	acl := c.aclObject()
	y, found := aclInstanceOf(acl, obj, inst)
	if !found {
		switch {
		case obj == 2:
			return 0, false // an Access Control instance has no ACL of its own
		case !c.multiServer():
			return rightsAll, true
		case obj == 1 && c.serverSSID(inst) == ssid:
			return RightRead | RightWrite | RightExecute, true
		}
		return 0, false
	}
	owner, _ := acl.Get(y, aclOwner)
	recs, _ := acl.Read(context.Background(), model.NewPath(2, y, aclACL))
	var own, def *int64
	for _, r := range recs {
		if r.Path.Len() != 4 {
			continue
		}
		v := r.Value.Int
		switch r.Path.ResourceInstance() {
		case ssid:
			own = &v
		case 0:
			def = &v
		}
	}
	switch {
	case own != nil:
		return *own, true
	case owner.Int == int64(ssid):
		return rightsAll, true
	case def != nil:
		return *def, true
	}
	return 0, false
}

// aclRights are the rights of ssid on an Access Control instance: every
// server reads it, its owner also writes it (LwM2M 1.1 Core §7.3.1.2.2).
func (c *Client) aclRights(ssid, inst uint16) int64 {
	if owner, ok := c.aclObject().Get(inst, aclOwner); ok && owner.Int == int64(ssid) {
		return RightRead | RightWrite
	}
	return RightRead
}

// serverSSID is the Short Server ID of Server instance inst, 0 if none.
func (c *Client) serverSSID(inst uint16) uint16 {
	v, _ := c.serverObject().Get(inst, serverShortID)
	return uint16(v.Int)
}

// mayAccess reports whether server ssid holds right on /obj/inst. want
// 0 asks only that some right can be obtained (Discover).
func (c *Client) mayAccess(ssid, obj, inst uint16, want int64) bool {
	var have int64
	if obj == 2 {
		if _, ok := c.aclObject().Get(inst, aclOwner); !ok {
			return true // no such instance: the handler says 4.04
		}
		have = c.aclRights(ssid, inst)
	} else {
		var ok bool
		if have, ok = c.rights(ssid, obj, inst); !ok {
			return false
		}
	}
	return have&want == want
}

// mayCreate reports whether server ssid may create instances of obj: C in
// the object-level Access Control instance, or a single server without one.
func (c *Client) mayCreate(ssid, obj uint16) bool {
	if obj == 2 {
		return false // the client creates Access Control instances
	}
	acl := c.aclObject()
	y, found := aclInstanceOf(acl, obj, maxID)
	if !found {
		return !c.multiServer()
	}
	recs, _ := acl.Read(context.Background(), model.NewPath(2, y, aclACL))
	for _, r := range recs {
		if r.Path.Len() == 4 && r.Path.ResourceInstance() == ssid {
			return r.Value.Int&RightCreate != 0
		}
	}
	return false
}

// authorize is the access check of a request from session s on p, by
// method: 0 when the request may go on to the object, else the code that
// refuses it.
func (c *Client) authorize(s *session, p model.Path, op aclOp) codes.Code {
	if p.Len() == 0 {
		return 0
	}
	if p.Object() == 0 {
		// The Security object is for the bootstrap server only
		// (LwM2M 1.1 Core §E.1).
		return codes.Unauthorized
	}
	if s == nil {
		return 0
	}
	if op == opCreate {
		if _, ok := c.object(p.Object()); !ok {
			return codes.NotFound
		}
		if !c.mayCreate(s.ssid, p.Object()) {
			return codes.Unauthorized
		}
		return 0
	}
	if p.Len() == 1 {
		// Object level: Discover and Write-Attributes need no right;
		// Read and Observe are filtered instance by instance (collect);
		// Write, Execute and Delete get 4.05 from the handler.
		return 0
	}
	if !c.mayAccess(s.ssid, p.Object(), p.Instance(), int64(op)) {
		return codes.Unauthorized
	}
	return 0
}

// aclOp is the right an operation needs; opDiscover needs none.
type aclOp int64

const (
	opRead     aclOp = RightRead
	opWrite    aclOp = RightWrite
	opExecute  aclOp = RightExecute
	opDelete   aclOp = RightDelete
	opCreate   aclOp = RightCreate
	opDiscover aclOp = 0
)

// readable reports whether the request in ctx may read /obj/inst; a
// context without a server (the client's own reads) may.
func (c *Client) readable(ctx context.Context, obj, inst uint16) bool {
	s, ok := ctx.Value(sessionKey{}).(*session)
	if !ok {
		return true
	}
	return c.mayAccess(s.ssid, obj, inst, RightRead)
}

// ownCreated gives /obj/inst, just created by server s, an Access Control
// instance with s as owner (LwM2M 1.1 Core §7.3.1.2.2), when there are
// several servers (§5.4.6 "Create").
func (c *Client) ownCreated(s *session, obj, inst uint16) {
	if s == nil || obj == 2 || !c.multiServer() {
		return
	}
	acl := c.aclObject()
	ids := acl.Instances()
	var y uint16
	for slices.Contains(ids, y) {
		y++
	}
	acl.Set(y, aclObjectID, model.Int(int64(obj)))
	acl.Set(y, aclInstanceID, model.Int(int64(inst)))
	acl.Set(y, aclOwner, model.Int(int64(s.ssid)))
	acl.SetMulti(y, aclACL, nil) // for the owner to write (§7.3.1.2.2)
}

// dropACL deletes the Access Control instance of a deleted /obj/inst
// (LwM2M 1.1 Core §7.3.1.2.2). The spec asks it when the owner deletes;
// it is done for any deleting server, as an instance created later with
// the same ID must not inherit the old rights.
func (c *Client) dropACL(obj, inst uint16) {
	acl := c.aclObject()
	if y, ok := aclInstanceOf(acl, obj, inst); ok {
		acl.RemoveInstance(y)
	}
}
