package content_test

import (
	"errors"
	"fmt"

	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

func Example() {
	types := func(p model.Path) (model.Type, bool) {
		if p == model.NewPath(5, 0, 1) {
			return model.TypeString, true
		}
		return 0, false
	}
	// A Write of the Package URI in plain text...
	base := model.NewPath(5, 0, 1)
	recs, err := content.Decode(content.TextPlain, base, []byte("coap://[::1]/fw.bin"), types)
	if err != nil {
		panic(err)
	}
	fmt.Println(recs[0].Path, recs[0].Value)

	// ...and a Read of the whole instance, which plain text cannot carry.
	recs = append(recs, model.Record{Path: model.NewPath(5, 0, 3), Value: model.Int(0)})
	_, err = content.Encode(content.TextPlain, model.NewPath(5, 0), recs)
	fmt.Println(errors.Is(err, content.ErrUnsupported))
	b, _ := content.Encode(content.SenMLJSON, model.NewPath(5, 0), recs)
	fmt.Println(string(b))
	// Output:
	// /5/0/1 coap://[::1]/fw.bin
	// true
	// [{"bn":"/5/0/","n":"1","vs":"coap://[::1]/fw.bin"},{"n":"3","v":0}]
}
