// Package all imports every protocol package of dbproxy, so that each
// registers itself: a program imports it for its side effects and serves
// them all. Adding a protocol is one import line here.
package all

import (
	_ "github.com/leproxy/leproxy/dbproxy/amqp"
	_ "github.com/leproxy/leproxy/dbproxy/cassandra"
	_ "github.com/leproxy/leproxy/dbproxy/elasticsearch"
	_ "github.com/leproxy/leproxy/dbproxy/ftp"
	_ "github.com/leproxy/leproxy/dbproxy/kafka"
	_ "github.com/leproxy/leproxy/dbproxy/ldap"
	_ "github.com/leproxy/leproxy/dbproxy/memcached"
	_ "github.com/leproxy/leproxy/dbproxy/mongodb"
	_ "github.com/leproxy/leproxy/dbproxy/mssql"
	_ "github.com/leproxy/leproxy/dbproxy/mysql"
	_ "github.com/leproxy/leproxy/dbproxy/postgres"
	_ "github.com/leproxy/leproxy/dbproxy/redis"
	_ "github.com/leproxy/leproxy/dbproxy/smtp"
	_ "github.com/leproxy/leproxy/dbproxy/tlsproxy"
)
