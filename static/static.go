package static

import "embed"

// Files holds the browser client (index.html, app.js, logic.js,
// transport.js, style.css), served at the site root.
//
//go:embed index.html app.js logic.js transport.js style.css
var Files embed.FS
