// Package internal_test holds checks over the layout of the module itself.
package internal_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryPackageHasDoc keeps the promise of the style guide: every package
// opens with a doc.go that explains it.
func TestEveryPackageHasDoc(t *testing.T) {
	checked := 0
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() || strings.Contains(path, "testdata") {
			return nil
		}
		entries, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		hasGo := false
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".go") && !strings.HasSuffix(e.Name(), "_test.go") {
				hasGo = true
			}
		}
		if !hasGo {
			return nil
		}
		checked++
		doc, err := os.ReadFile(filepath.Join(path, "doc.go"))
		if err != nil {
			t.Errorf("package internal/%s has no doc.go", path)
			return nil
		}
		if !strings.Contains(string(doc), "// Package ") {
			t.Errorf("internal/%s/doc.go has no package comment", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked == 0 {
		t.Fatal("no packages found under internal/")
	}
}
