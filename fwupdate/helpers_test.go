package fwupdate_test

import (
	"encoding/base64"
	"time"

	"github.com/lwm2m-fota/lwm2m/download"
)

func downloadRequest() download.Request {
	return download.Request{Retries: 1, RetryDelay: 50 * time.Millisecond, Timeout: 5 * time.Second,
		Tx: download.TxParams{AckTimeout: 200 * time.Millisecond, MaxRetransmit: 2}}
}

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
