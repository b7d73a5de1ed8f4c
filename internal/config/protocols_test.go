package config

// The protocol names a mapping may use are those the protocol packages
// register.
import _ "github.com/leproxy/leproxy/dbproxy/all"
