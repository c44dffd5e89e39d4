package main

import (
	"strings"
	"testing"
)

func TestConfigErrorsNeverEchoSecrets(t *testing.T) {
	for _, tc := range []struct {
		env    map[string]string
		name   string // the variable the error must name
		secret string // what it must not show
	}{
		{map[string]string{"AUTH_SECRET": "too-short-secret"}, "AUTH_SECRET", "too-short-secret"},
		{map[string]string{"REDIS_URL": "redis://ops:hunter2-hunter2@localhost:notaport"}, "REDIS_URL", "hunter2-hunter2"},
		{map[string]string{"REDIS_URL": "redis://10.0.0.1:6379,redis://:pa55-w0rd-x@10.0.0.2:6379/db"}, "REDIS_URL", "pa55-w0rd-x"},
		{map[string]string{"WEBHOOK_SECRET": "short-hmac-key"}, "WEBHOOK_SECRET", "short-hmac-key"},
		{map[string]string{"WEBHOOK_URL": "ftp://app:s3cr3t-pass@hooks.example.com/in"}, "WEBHOOK_URL", "s3cr3t-pass"},
		{map[string]string{"PUBLISH_HOOK_URL": "gopher://app:an0ther-pass@hooks.example.com/"}, "PUBLISH_HOOK_URL", "an0ther-pass"},
	} {
		_, err := loadConfig(envMap(tc.env))
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.name) {
			t.Errorf("error %q does not name %s", err, tc.name)
		}
		if strings.Contains(err.Error(), tc.secret) {
			t.Errorf("error %q shows the secret", err)
		}
	}
	// A long enough secret is taken as given.
	c, err := loadConfig(envMap(map[string]string{"AUTH_SECRET": " " + strings.Repeat("k", 32) + " "}))
	if err != nil || c.AuthSecret != strings.Repeat("k", 32) {
		t.Fatalf("%v %q", err, c.AuthSecret)
	}
}
