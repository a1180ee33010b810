package corelink_test

import (
	"fmt"

	"github.com/lwm2m-fota/lwm2m/lwm2m/corelink"
)

func ExampleEncode() {
	b := corelink.Encode([]corelink.Link{
		{Target: "/", Params: []corelink.Param{{Name: "rt", Value: "oma.lwm2m"}}},
		{Target: "/5", Params: []corelink.Param{{Name: "ver", Value: "1.1"}}},
		{Target: "/5/0"},
	})
	fmt.Println(string(b))
	// Output: </>;rt="oma.lwm2m",</5>;ver=1.1,</5/0>
}

func ExampleParse() {
	links, err := corelink.Parse([]byte(`</3/0>;obs,</3/0/7>;pmin=10;title="a, b"`))
	if err != nil {
		panic(err)
	}
	for _, l := range links {
		fmt.Println(l.Target, l.Params)
	}
	// Output:
	// /3/0 [{obs }]
	// /3/0/7 [{pmin 10} {title a, b}]
}
