package auth

import (
	"encoding/base64"
	"errors"

	"github.com/cofferhq/coffer"
)

func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

func asError(err error, target **coffer.Error) bool { return errors.As(err, target) }
