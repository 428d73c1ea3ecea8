package shares

import (
	"encoding"
	"fmt"
	"reflect"
	"strings"
	"time"

	commonconfig "github.com/prometheus/common/config"
	"go.yaml.in/yaml/v2"
)

// yamlTree encodes a value as the tree of map[string]any, []any and scalars
// that yaml.Marshal (go.yaml.in/yaml/v2) then yaml.Unmarshal would give, map
// keys printed as the TA prints them for JSON. It follows yaml v2's rules:
// struct tags, omitempty with IsZeroer, yaml.Marshaler, TextMarshaler, times
// and durations.
//
// With reveal, a commonconfig.Secret encodes as its value, as it marshals
// when prometheus/common's switch for secret values is set. That switch is
// process-wide, and the prometheusreceiver in this process marshals configs
// (to compare and log them) at any time, so flipping it, even briefly, can
// leak secrets into its logs; this encoder never reads or sets it.
type yamlTree struct{ reveal bool }

func (t yamlTree) value(v reflect.Value) (any, error) {
	if !v.IsValid() || v.Kind() == reflect.Pointer && v.IsNil() {
		return nil, nil
	}
	if !v.CanInterface() { // yaml v2 panics
		return nil, fmt.Errorf("cannot marshal unexported %s", v.Type())
	}
	i := v.Interface()
	if t.reveal {
		switch s := i.(type) {
		case commonconfig.Secret:
			return string(s), nil
		case *commonconfig.Secret:
			return string(*s), nil
		}
	}
	switch m := i.(type) {
	case nil:
		return nil, nil
	case time.Time, *time.Time:
		// A timestamp for yaml v2, not text: handled by kind below.
	case yaml.Marshaler:
		r, err := m.MarshalYAML()
		if err != nil || r == nil {
			return nil, err
		}
		// As in yaml v2, the result's own Marshaler is not called again,
		// unless the result is a pointer or an interface.
		v = reflect.ValueOf(r)
	case encoding.TextMarshaler:
		text, err := m.MarshalText()
		return string(text), err
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		return t.value(v.Elem())
	case reflect.Map:
		return t.mapping(v)
	case reflect.Struct:
		if tm, ok := v.Interface().(time.Time); ok {
			return tm.Format(time.RFC3339Nano), nil
		}
		return t.structure(v)
	case reflect.Slice, reflect.Array:
		if v.Type().Elem() == reflect.TypeFor[yaml.MapItem]() {
			return t.items(v)
		}
		l := make([]any, v.Len()) // never nil: yaml writes a nil slice as []
		for i := range l {
			var err error
			if l[i], err = t.value(v.Index(i)); err != nil {
				return nil, err
			}
		}
		return l, nil
	// Scalars lose their named types, which could have JSON marshalers
	// (Secret has one).
	case reflect.String:
		return v.String(), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if d, ok := v.Interface().(time.Duration); ok {
			return d.String(), nil
		}
		return v.Int(), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return v.Uint(), nil
	case reflect.Float32:
		return float32(v.Float()), nil
	case reflect.Float64:
		return v.Float(), nil
	case reflect.Bool:
		return v.Bool(), nil
	}
	return nil, fmt.Errorf("cannot marshal type: %s", v.Type())
}

// key prints a map key as the TA does after a YAML round trip.
func (t yamlTree) key(k reflect.Value) (string, error) {
	e, err := t.value(k)
	return fmt.Sprint(e), err
}

func (t yamlTree) mapping(v reflect.Value) (any, error) {
	m := make(map[string]any, v.Len()) // a nil map too: yaml writes {}
	for iter := v.MapRange(); iter.Next(); {
		k, err := t.key(iter.Key())
		if err != nil {
			return nil, err
		}
		if m[k], err = t.value(iter.Value()); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// items encodes a yaml.MapSlice (or any slice of yaml.MapItem) as the
// mapping yaml v2 writes for it.
func (t yamlTree) items(v reflect.Value) (any, error) {
	m := make(map[string]any, v.Len())
	for i := range v.Len() {
		item := v.Index(i).Interface().(yaml.MapItem)
		k, err := t.key(reflect.ValueOf(item.Key))
		if err != nil {
			return nil, err
		}
		if m[k], err = t.value(reflect.ValueOf(item.Value)); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (t yamlTree) structure(v reflect.Value) (any, error) {
	m := map[string]any{}
	if err := t.addFields(m, v); err != nil {
		return nil, fmt.Errorf("%s: %w", v.Type(), err)
	}
	return m, nil
}

// addFields adds the fields of struct v to m, and those of its inlined
// structs and map.
func (t yamlTree) addFields(m map[string]any, v reflect.Value) error {
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if f.PkgPath != "" && !f.Anonymous {
			continue // unexported
		}
		tag := f.Tag.Get("yaml")
		if tag == "" && !strings.Contains(string(f.Tag), ":") {
			tag = string(f.Tag) // yaml v2 takes a bare tag as the yaml one
		}
		if tag == "-" {
			continue
		}
		name, flags, _ := strings.Cut(tag, ",")
		var omitEmpty, inline bool
		for flag := range strings.SplitSeq(flags, ",") {
			switch flag {
			case "omitempty":
				omitEmpty = true
			case "inline":
				inline = true
			case "flow", "":
			default:
				return fmt.Errorf("unsupported flag %q in tag %q", flag, tag)
			}
		}
		fv := v.Field(i)
		switch {
		case inline && f.Type.Kind() == reflect.Struct:
			if err := t.addFields(m, fv); err != nil {
				return err
			}
			continue
		case inline && f.Type.Kind() == reflect.Map && f.Type.Key() == reflect.TypeFor[string]():
			for iter := fv.MapRange(); iter.Next(); {
				if err := t.put(m, iter.Key().String(), iter.Value()); err != nil {
					return err
				}
			}
			continue
		case inline:
			return fmt.Errorf("field %s: inline needs a struct or a map with string keys", f.Name)
		case omitEmpty && fv.CanInterface() && isZero(fv): // else value fails
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		if err := t.put(m, name, fv); err != nil {
			return err
		}
	}
	return nil
}

// put adds a struct's field, which yaml v2 refuses to write twice.
func (t yamlTree) put(m map[string]any, key string, v reflect.Value) error {
	if _, dup := m[key]; dup {
		return fmt.Errorf("duplicated key %q", key)
	}
	e, err := t.value(v)
	m[key] = e
	return err
}

// isZero is yaml v2's test for omitempty.
func isZero(v reflect.Value) bool {
	if z, ok := v.Interface().(yaml.IsZeroer); ok {
		if (v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface) && v.IsNil() {
			return true
		}
		return z.IsZero()
	}
	switch v.Kind() {
	case reflect.String:
		return v.Len() == 0
	case reflect.Interface, reflect.Pointer:
		return v.IsNil()
	case reflect.Slice, reflect.Map:
		return v.Len() == 0
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return v.Int() == 0
	case reflect.Float32, reflect.Float64:
		return v.Float() == 0
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return v.Uint() == 0
	case reflect.Bool:
		return !v.Bool()
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).PkgPath == "" && !isZero(v.Field(i)) {
				return false
			}
		}
		return true
	}
	return false
}
