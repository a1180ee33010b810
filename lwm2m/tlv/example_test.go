package tlv_test

import (
	"fmt"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/lwm2m/tlv"
)

func ExampleEncode() {
	base := model.NewPath(3, 0)
	b, err := tlv.Encode(base, []model.Record{
		{Path: model.NewPath(3, 0, 9), Value: model.Int(100)},
		{Path: model.NewPath(3, 0, 6, 0), Value: model.Int(1)},
		{Path: model.NewPath(3, 0, 6, 1), Value: model.Int(5)},
	})
	if err != nil {
		panic(err)
	}
	fmt.Printf("% X\n", b)
	// Output: C1 09 64 86 06 41 00 01 41 01 05
}

func ExampleDecode() {
	types := func(p model.Path) (model.Type, bool) {
		if p == model.NewPath(3, 0, 9) {
			return model.TypeInteger, true
		}
		return 0, false
	}
	recs, err := tlv.Decode(model.NewPath(3, 0), []byte{0xC1, 0x09, 0x64, 0xC1, 0x63, 0x2A}, types)
	if err != nil {
		panic(err)
	}
	for _, r := range recs {
		fmt.Println(r.Path, r.Value.Type, r.Value)
	}
	// Output:
	// /3/0/9 integer 100
	// /3/0/99 opaque <1 bytes>
}
