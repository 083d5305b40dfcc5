//! Nested request objects taken only as JSON objects. serde's derived `Deserialize` of a
//! struct also takes an array of its fields in order (`"chat": [null, null]`), which the
//! API's document does not allow and no client means. A field deserialized with these
//! reads the struct through the same map access, so an error inside it keeps its path.

use std::{collections::BTreeMap, fmt, marker::PhantomData};

use serde::{
    Deserialize, Deserializer,
    de::{DeserializeSeed, MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer},
};

/// `#[serde(deserialize_with = "crate::object::optional")]` on an `Option<T>` field.
pub fn optional<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    d.deserialize_option(Optional(PhantomData))
}

/// `#[serde(deserialize_with = "crate::object::list")]` on a `Vec<T>` field.
pub fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    d.deserialize_seq(List(PhantomData))
}

/// `#[serde(deserialize_with = "crate::object::map")]` on a `BTreeMap<String, T>` field.
pub fn map<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<BTreeMap<String, T>, D::Error> {
    d.deserialize_map(Map(PhantomData))
}

struct Map<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for Map<T> {
    type Value = BTreeMap<String, T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of objects")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Object(PhantomData))?;
            entries.insert(key, value);
        }
        Ok(entries)
    }
}

/// A `T` from a JSON object only.
struct Object<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for Object<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Object<T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_map(self)
    }
}

struct Optional<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for Optional<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object or null")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Object(PhantomData).deserialize(d).map(Some)
    }
}

struct List<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for List<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(Object(PhantomData))? {
            items.push(item);
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: Option<u8>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        #[serde(default, deserialize_with = "super::optional")]
        one: Option<Inner>,
        #[serde(default, deserialize_with = "super::list")]
        many: Vec<Inner>,
    }

    fn parse(json: &str) -> Result<Outer, String> {
        let mut de = serde_json::Deserializer::from_str(json);
        serde_path_to_error::deserialize(&mut de).map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    #[test]
    fn nested_structs_are_objects_and_their_errors_keep_their_path() {
        let taken = parse(r#"{"one": {"a": 1}, "many": [{"a": 2}, {}]}"#).unwrap();
        assert_eq!(taken.one, Some(Inner { a: Some(1) }));
        assert_eq!(taken.many, vec![Inner { a: Some(2) }, Inner { a: None }]);
        assert_eq!(parse(r#"{"one": null}"#).unwrap().one, None);
        assert_eq!(parse("{}").unwrap(), Outer { one: None, many: vec![] });

        assert!(parse(r#"{"one": [null]}"#).unwrap_err().starts_with("one: invalid type: sequence"));
        assert!(parse(r#"{"many": [[null]]}"#).unwrap_err().starts_with("many[0]: invalid type: sequence"));
        assert!(parse(r#"{"one": {"a": "x"}}"#).unwrap_err().starts_with("one.a: invalid type"));
        assert!(parse(r#"{"many": [{"b": 1}]}"#).unwrap_err().starts_with("many[0].b: unknown field"));
    }
}
