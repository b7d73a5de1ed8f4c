package kafka

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// TestSASL logs in through leproxy (SASL_SSL): franz-go with SCRAM-SHA-256
// and sarama with PLAIN, each on every broker; a wrong password is refused
// by the cluster, whose answer passes through.
func TestSASL(t *testing.T) {
	s := startKafka(t, 3, nil, kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-256", "scram-user", "scram-pass"),
		kfake.Superuser("PLAIN", "plain-user", "plain-pass"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	produce := func(pass string) error {
		cl, err := kgo.NewClient(kgo.SeedBrokers(s.seed()), kgo.Dialer(s.guard.dialTLS),
			kgo.SASL(scram.Auth{User: "scram-user", Pass: pass}.AsSha256Mechanism()),
			kgo.DefaultProduceTopic("franz"), kgo.RecordPartitioner(kgo.ManualPartitioner()),
			kgo.RetryTimeout(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		for p := range int32(3) {
			if err := cl.ProduceSync(ctx, &kgo.Record{Partition: p, Value: []byte("x")}).FirstErr(); err != nil {
				return err
			}
		}
		return nil
	}
	if err := produce("scram-pass"); err != nil {
		t.Fatalf("franz-go with SCRAM-SHA-256: %v", err)
	}

	// A wrong PLAIN password, by hand: the cluster's refusal reaches the
	// client as the cluster sent it.
	c := s.raw(t, 1)
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.SetVersion(1)
	hs.Mechanism = "PLAIN"
	hsr := kmsg.NewPtrSASLHandshakeResponse()
	hsr.SetVersion(1)
	if err := roundTrip(c, 1, hs, hsr); err != nil || hsr.ErrorCode != 0 {
		t.Fatalf("SaslHandshake: %v, error %d", err, hsr.ErrorCode)
	}
	auth := kmsg.NewPtrSASLAuthenticateRequest()
	auth.SetVersion(2)
	auth.SASLAuthBytes = []byte("\x00plain-user\x00wrong")
	authr := kmsg.NewPtrSASLAuthenticateResponse()
	authr.SetVersion(2)
	// kfake closes the connection; Kafka answers
	// SASL_AUTHENTICATION_FAILED (58) first, then closes.
	err := roundTrip(c, 2, auth, authr)
	if !errors.Is(err, io.EOF) && (err != nil || authr.ErrorCode != 58) {
		t.Errorf("wrong password: %v, error %d; want the broker's refusal", err, authr.ErrorCode)
	}

	var prod sarama.SyncProducer
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	cfg.Net.TLS.Enable = true
	cfg.Net.TLS.Config = &tls.Config{RootCAs: s.proxy.CA.Pool, MinVersion: tls.VersionTLS12}
	cfg.Net.Proxy.Enable = true
	cfg.Net.Proxy.Dialer = s.guard
	cfg.Net.SASL.Enable = true
	cfg.Net.SASL.Mechanism = sarama.SASLTypePlaintext
	cfg.Net.SASL.Version = sarama.SASLHandshakeV1
	cfg.Net.SASL.User, cfg.Net.SASL.Password = "plain-user", "plain-pass"
	cfg.Producer.Return.Successes = true
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	prod, err = sarama.NewSyncProducer([]string{s.seed()}, cfg)
	if err != nil {
		t.Fatalf("sarama with PLAIN: %v", err)
	}
	defer prod.Close()
	for p := range int32(3) {
		if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: "sarama", Partition: p, Value: sarama.StringEncoder("x")}); err != nil {
			t.Fatalf("sarama with PLAIN, partition %d: %v", p, err)
		}
	}
	s.guard.wantAllDialed(t)
}

// TestApiVersionsUnsupported has a broker answer an ApiVersions version
// it does not know, at v0 with UNSUPPORTED_VERSION, as Kafka does: leproxy
// decodes it at v0 and still clamps it.
func TestApiVersionsUnsupported(t *testing.T) {
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.SetVersion(0)
	resp.ErrorCode = errCodeUnsupportedVersion
	resp.ApiKeys = []kmsg.ApiVersionsResponseApiKey{{ApiKey: keyMetadata, MaxVersion: 99}, {ApiKey: keyApiVersions, MaxVersion: 3}}
	content := resp.AppendTo(binary.BigEndian.AppendUint32(nil, 3))
	out, err := testRewriter().rewrite(request{corr: 3, key: keyApiVersions, version: 9}, content)
	if err != nil || out == nil {
		t.Fatalf("rewrite: %v, %v", out, err)
	}
	got := kmsg.NewPtrApiVersionsResponse()
	got.SetVersion(0)
	if err := got.ReadFrom(out[4:]); err != nil {
		t.Fatal(err)
	}
	if got.ErrorCode != errCodeUnsupportedVersion || len(got.ApiKeys) != 2 || got.ApiKeys[0].MaxVersion != maxVersion(keyMetadata) {
		t.Errorf("got %+v, want UNSUPPORTED_VERSION with Metadata clamped to %d", got, maxVersion(keyMetadata))
	}
}

// TestApiVersionsNewer: an ApiVersions answer at a version newer than
// leproxy's codec (client and broker both newer) is an error, never a
// re-encoding that could drop fields.
func TestApiVersionsNewer(t *testing.T) {
	v := maxVersion(keyApiVersions) + 1
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.SetVersion(v - 1)
	resp.ApiKeys = []kmsg.ApiVersionsResponseApiKey{{ApiKey: keyMetadata, MaxVersion: 99}}
	content := resp.AppendTo(binary.BigEndian.AppendUint32(nil, 3))
	if _, err := testRewriter().rewrite(request{corr: 3, key: keyApiVersions, version: v}, content); err == nil {
		t.Error("an ApiVersions response newer than kmsg was rewritten")
	}
}
