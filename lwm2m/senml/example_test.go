package senml_test

import (
	"fmt"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/lwm2m/senml"
)

func ExampleEncodeJSON() {
	b, err := senml.EncodeJSON(model.NewPath(3, 0), []model.Record{
		{Path: model.NewPath(3, 0, 0), Value: model.String("Open Mobile Alliance")},
		{Path: model.NewPath(3, 0, 7, 0), Value: model.Int(3800)},
		{Path: model.NewPath(3, 0, 7, 1), Value: model.Int(5000)},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(string(b))
	// Output: [{"bn":"/3/0/","n":"0","vs":"Open Mobile Alliance"},{"n":"7/0","v":3800},{"n":"7/1","v":5000}]
}

func ExampleDecodeJSON() {
	types := func(p model.Path) (model.Type, bool) {
		if p == model.NewPath(5, 0, 13) {
			return model.TypeUnsigned, true
		}
		return 0, false
	}
	recs, err := senml.DecodeJSON(model.NewPath(5, 0), []byte(`[{"bn":"/5/0/","n":"13","v":3600},{"n":"0","vd":"AQID"}]`), types)
	if err != nil {
		panic(err)
	}
	for _, r := range recs {
		fmt.Println(r.Path, r.Value.Type, r.Value)
	}
	// Output:
	// /5/0/13 unsigned 3600
	// /5/0/0 opaque <3 bytes>
}

func ExampleEncodeCBOR() {
	b, err := senml.EncodeCBOR(model.NewPath(3, 0, 9), []model.Record{
		{Path: model.NewPath(3, 0, 9), Value: model.Int(100)},
	})
	if err != nil {
		panic(err)
	}
	fmt.Printf("% X\n", b)
	// Output: 81 A2 21 66 2F 33 2F 30 2F 39 02 18 64
}
