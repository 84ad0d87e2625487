package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// devState is what a running `setflow dev` tells the other commands on the
// same machine (`setflow send`, `setflow audit user`): where its signing key
// is and which issuer it accepts, so that they work from any directory.
type devState struct {
	KeyPath string `json:"key_path"`
	Issuer  string `json:"issuer"`
}

// devStateFile is in the user's configuration directory
// ($XDG_CONFIG_HOME/setflow/dev.json, ~/.config/setflow/dev.json).
func devStateFile() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "setflow", "dev.json"), nil
}

func saveDevState(s devState) error {
	p, err := devStateFile()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(p, b, 0o600)
}

func loadDevState() (devState, bool) {
	p, err := devStateFile()
	if err != nil {
		return devState{}, false
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return devState{}, false
	}
	var s devState
	if json.Unmarshal(b, &s) != nil {
		return devState{}, false
	}
	return s, true
}

// findDevKey finds the development signing key for `setflow send`: the
// SETFLOW_DEV_KEY or -dev-key path, else .setflow-dev/signing-key.pem in this
// directory or any parent (like git finds .git), else the key the last
// `setflow dev` on this machine used. It never creates one: a new key would
// sign tokens `setflow dev` rejects.
func findDevKey(explicit string) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", fmt.Errorf("development key %s: %w", explicit, err)
		}
		return explicit, nil
	}
	var looked []string
	if dir, err := os.Getwd(); err == nil {
		for {
			p := filepath.Join(dir, devKeyPath)
			looked = append(looked, p)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	if s, ok := loadDevState(); ok && s.KeyPath != "" {
		looked = append(looked, s.KeyPath+" (from the last `setflow dev`)")
		if _, err := os.Stat(s.KeyPath); err == nil {
			return s.KeyPath, nil
		}
	} else if f, err := devStateFile(); err == nil {
		looked = append(looked, f+" (written by `setflow dev`: none)")
	}
	return "", errors.New("no development signing key found; start `setflow dev` first (it creates one), or set SETFLOW_DEV_KEY / -dev-key. Looked in:\n  " +
		strings.Join(looked, "\n  "))
}
