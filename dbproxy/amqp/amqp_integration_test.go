package amqp

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// AMQP 0-9-1 through leproxy with a real RabbitMQ and amqp091-go. The
// broker takes seconds to start, so every case that needs it shares the
// one this test starts.

func TestAMQPIntegration(t *testing.T) {
	broker := testenv.StartRabbitMQ(t)
	ca := dbtest.NewCA(t)
	p := dbtest.StartProtocol(t, ca, "amqp", "q.test", dbproxy.Route{Host: "q.test", Backend: broker.Addr})
	amqpsURL := fmt.Sprintf("amqps://%s:%s@%s/", broker.User, broker.Password, p.Addr)

	t.Run("publish and consume over amqps", func(t *testing.T) {
		conn, err := amqp091.DialTLS(amqpsURL, &tls.Config{ServerName: "q.test", RootCAs: ca.Pool})
		if err != nil {
			t.Fatalf("DialTLS: %v", err)
		}
		defer conn.Close()
		roundTrip(t, conn, "leproxy-amqps")
	})
	t.Run("no server name gets the default", func(t *testing.T) {
		conn, err := dialTLS(p, "", "q.test")
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer conn.Close()
		roundTrip(t, conn, "leproxy-nosni")
	})
	t.Run("plaintext on the TLS port", func(t *testing.T) {
		_, err := amqp091.Dial(fmt.Sprintf("amqp://%s:%s@%s/", broker.User, broker.Password, p.Addr))
		if err == nil {
			t.Fatal("amqp091-go connected in plaintext to the TLS port")
		}
	})
	t.Run("unknown server name", func(t *testing.T) {
		_, err := amqp091.DialTLS(amqpsURL, &tls.Config{ServerName: "c.test", InsecureSkipVerify: true})
		var ae *amqp091.Error
		if !errors.As(err, &ae) || ae.Code != 530 || !strings.Contains(ae.Reason, "no route for server name c.test") {
			t.Errorf("got %v, want AMQP error 530 with the no route reason", err)
		}
	})
	t.Run("backend down", func(t *testing.T) {
		q := dbtest.StartProtocol(t, ca, "amqp", "", dbproxy.Route{Host: "q.test", Backend: dbtest.ClosedAddr(t)})
		_, err := amqp091.DialTLS(fmt.Sprintf("amqps://guest:guest@%s/", q.Addr), &tls.Config{ServerName: "q.test", RootCAs: ca.Pool})
		var ae *amqp091.Error
		if !errors.As(err, &ae) || ae.Code != 320 || !strings.Contains(ae.Reason, "could not connect to the backend of q.test") {
			t.Errorf("got %v, want AMQP error 320 with the backend reason", err)
		}
	})
}

// roundTrip declares a queue, publishes to it and consumes the message.
func roundTrip(t *testing.T, conn *amqp091.Connection, queue string) {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	defer ch.Close()
	if _, err := ch.QueueDeclare(queue, false, true, false, false, nil); err != nil {
		t.Fatalf("queue declare: %v", err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("confirm mode: %v", err)
	}
	body := "hello through leproxy " + queue
	confirm, err := ch.PublishWithDeferredConfirmWithContext(t.Context(), "", queue, false, false,
		amqp091.Publishing{ContentType: "text/plain", Body: []byte(body)})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	if ok, err := confirm.WaitContext(t.Context()); err != nil || !ok {
		t.Fatalf("publisher confirm: %t, %v", ok, err)
	}
	msgs, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume: %v", err)
	}
	select {
	case m := <-msgs:
		if string(m.Body) != body {
			t.Errorf("consumed %q, want %q", m.Body, body)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no message consumed in 20 s")
	}
}
