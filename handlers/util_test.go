package handlers_test

import (
	"io/fs"

	"github.com/xroom/xroom/static"
	"github.com/xroom/xroom/streams"
)

func idLess(a, b string) bool {
	x, err1 := streams.ParseID(a)
	y, err2 := streams.ParseID(b)
	return err1 == nil && err2 == nil && x.Less(y)
}

func staticFS() fs.FS { return static.Files }
