package proxy

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
)

// restartKeys are the config keys a reload keeps at their running values
// (Apply): changing them needs a restart.
var restartKeys = []string{"listen", "admin_listen", "database", "pool.connect_timeout", "pool.acquire_timeout", "coordinator", "cache", "shards"}

func reloadable(key string) string {
	for _, k := range restartKeys {
		if key == k || strings.HasPrefix(key, k+".") || strings.HasPrefix(key, k+"[") {
			return "no"
		}
	}
	return "yes"
}

// secretKey reports whether a config key holds a secret: its value is
// never shown.
func secretKey(key string) bool {
	k := strings.ToLower(key)
	return strings.Contains(k, "password") || strings.Contains(k, "secret")
}

// flattenConfig appends one row (key, value, reloadable) per scalar in v,
// a config struct walked by its yaml tags, keys joined with dots. Zero
// values are shown as they are (the defaults are already applied).
func flattenConfig(prefix string, v reflect.Value, out [][]string) [][]string {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return out
		}
		v = v.Elem()
	}
	join := func(k string) string {
		if prefix == "" {
			return k
		}
		return prefix + "." + k
	}
	switch v.Kind() {
	case reflect.Struct:
		if d, ok := v.Interface().(time.Duration); ok {
			return append(out, []string{prefix, d.String(), reloadable(prefix)})
		}
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("yaml")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "-" {
				continue
			}
			if strings.Contains(opts, "inline") {
				out = flattenConfig(prefix, v.Field(i), out)
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			out = flattenConfig(join(name), v.Field(i), out)
		}
		return out
	case reflect.Map:
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
		for _, k := range keys {
			out = flattenConfig(join(fmt.Sprint(k)), v.MapIndex(k), out)
		}
		return out
	case reflect.Slice, reflect.Array:
		elem := v.Type().Elem()
		for elem.Kind() == reflect.Pointer {
			elem = elem.Elem()
		}
		if elem.Kind() == reflect.Struct || elem.Kind() == reflect.Map || elem.Kind() == reflect.Slice {
			for i := 0; i < v.Len(); i++ {
				out = flattenConfig(fmt.Sprintf("%s[%d]", prefix, i), v.Index(i), out)
			}
			return out
		}
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = fmt.Sprint(v.Index(i).Interface())
		}
		return append(out, []string{prefix, strings.Join(parts, ", "), reloadable(prefix)})
	}
	if v.Kind() == reflect.Int64 && v.Type() == reflect.TypeOf(time.Duration(0)) {
		return append(out, []string{prefix, time.Duration(v.Int()).String(), reloadable(prefix)})
	}
	val := fmt.Sprint(v.Interface())
	if secretKey(prefix) && val != "" {
		val = "********"
	}
	return append(out, []string{prefix, val, reloadable(prefix)})
}
