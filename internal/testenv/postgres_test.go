package testenv

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestStartPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t.Run("trust", func(t *testing.T) {
		pg := StartPostgres(t, PostgresOptions{})
		conn, err := pgx.Connect(ctx, pg.ConnString())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var port int
		if err := conn.QueryRow(ctx, "select current_setting('port')::int").Scan(&port); err != nil || port != pg.Port {
			t.Errorf("got port %d, %v; want %d", port, err, pg.Port)
		}
	})
	t.Run("password", func(t *testing.T) {
		pg := StartPostgres(t, PostgresOptions{Password: "pw"})
		conn, err := pgx.Connect(ctx, pg.ConnString())
		if err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
		pg.Password = "wrong"
		_, err = pgx.Connect(ctx, pg.ConnString())
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
			t.Errorf("wrong password: got %v, want SQLSTATE 28P01", err)
		}
	})
	t.Run("stop", func(t *testing.T) {
		pg := StartPostgres(t, PostgresOptions{})
		pg.Stop()
		pg.Stop()
		if _, err := pgx.Connect(ctx, pg.ConnString()); err == nil {
			t.Error("connected to a stopped server")
		}
	})
}
