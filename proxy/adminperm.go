package proxy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgerrcode"
)

// Admin console permissions (admin_permissions): what each admin may run.
// show covers every SHOW command (read-only); reload, recover and
// cache_clear the commands of those names; all covers every command,
// those added later included. An admin without an entry may run every
// command, as before the option existed.
const (
	adminPermShow       = "show"
	adminPermReload     = "reload"
	adminPermRecover    = "recover"
	adminPermCacheClear = "cache_clear"
	adminPermAll        = "all"
)

var adminPerms = []string{adminPermShow, adminPermReload, adminPermRecover, adminPermCacheClear, adminPermAll}

func (c Config) validateAdminPermissions() []error {
	var errs []error
	for user, perms := range c.AdminPermissions {
		if !slices.Contains(c.Admins, user) {
			errs = append(errs, fmt.Errorf("admin_permissions: %s is not in admins", user))
		}
		if len(perms) == 0 {
			errs = append(errs, fmt.Errorf("admin_permissions: %s: list at least one of %s", user, strings.Join(adminPerms, ", ")))
		}
		for _, p := range perms {
			if !slices.Contains(adminPerms, p) {
				errs = append(errs, fmt.Errorf("admin_permissions: %s: %q is not one of %s", user, p, strings.Join(adminPerms, ", ")))
			}
		}
	}
	return errs
}

// adminPermission is the permission an admin command needs ("" for none:
// SET and empty queries), from its first word and the rest.
func adminPermission(word, rest string) string {
	switch word {
	case "", "SET":
		return ""
	case "SHOW":
		return adminPermShow
	case "RELOAD":
		return adminPermReload
	case "RECOVER":
		return adminPermRecover
	case "CACHE":
		return adminPermCacheClear
	}
	return adminPermAll
}

// adminPermitted refuses with 42501 an admin command the session's user
// may not run; word is the command's first word in upper case.
func (s *session) adminPermitted(word, rest string) error {
	need := adminPermission(word, rest)
	if need == "" {
		return nil
	}
	perms, ok := s.srv.live.Load().cfg.AdminPermissions[s.user]
	if !ok || slices.Contains(perms, adminPermAll) || slices.Contains(perms, need) {
		return nil
	}
	cmd := word
	if word == "SHOW" || word == "CACHE" {
		w, _ := cutWord(rest)
		cmd += " " + strings.ToUpper(w)
	}
	return &pgError{code: pgerrcode.InsufficientPrivilege,
		msg:    fmt.Sprintf("permission denied for admin command %s", strings.TrimSpace(cmd)),
		detail: fmt.Sprintf("admin_permissions of user %s: %s.", s.user, strings.Join(perms, ", ")),
		hint:   fmt.Sprintf("Add %s (or all) to the user's admin_permissions.", need)}
}
