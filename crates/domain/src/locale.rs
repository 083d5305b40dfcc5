//! Locales of subscribers, templates and tenants: BCP 47 tags as people write them
//! (`en`, `pt-BR`, `zh-Hant-TW`), compared in one normal form.

/// The tag in normal form (language lower case, a 4-letter script title case, a region
/// upper case: `pt-br` -> `pt-BR`), or `None` if it is not a plausible tag.
pub fn normalize(tag: &str) -> Option<String> {
    let mut parts = tag.split(['-', '_']);
    let language = parts.next()?;
    if !(2..=3).contains(&language.len()) || !language.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let mut out = language.to_ascii_lowercase();
    for part in parts {
        if !(2..=8).contains(&part.len()) || !part.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        out.push('-');
        match part.len() {
            2 if part.bytes().all(|b| b.is_ascii_alphabetic()) => out.push_str(&part.to_ascii_uppercase()),
            4 if part.bytes().all(|b| b.is_ascii_alphabetic()) => {
                out.push_str(&part[..1].to_ascii_uppercase());
                out.push_str(&part[1..].to_ascii_lowercase());
            }
            _ => out.push_str(&part.to_ascii_lowercase()),
        }
    }
    (out.len() <= 35).then_some(out)
}

/// The locales to look for a template in, best first: the subscriber's locale, each
/// shorter form of it down to its language (`zh-Hant-TW`, `zh-Hant`, `zh`), then the
/// tenant's default. Both are expected in normal form.
pub fn fallback_chain(subscriber: Option<&str>, tenant_default: &str) -> Vec<String> {
    let mut chain: Vec<String> = Vec::new();
    if let Some(tag) = subscriber {
        let mut tag = tag;
        loop {
            chain.push(tag.to_owned());
            match tag.rfind('-') {
                Some(cut) => tag = &tag[..cut],
                None => break,
            }
        }
    }
    if !chain.iter().any(|l| l == tenant_default) {
        chain.push(tenant_default.to_owned());
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_separators() {
        assert_eq!(normalize("pt-br").as_deref(), Some("pt-BR"));
        assert_eq!(normalize("PT_BR").as_deref(), Some("pt-BR"));
        assert_eq!(normalize("zh-hant-tw").as_deref(), Some("zh-Hant-TW"));
        assert_eq!(normalize("de").as_deref(), Some("de"));
        assert_eq!(normalize("es-419").as_deref(), Some("es-419"));
        for bad in ["", "e", "english", "en-", "en--US", "1n", "en-US-toolongpart"] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }

    #[test]
    fn falls_back_from_the_full_tag_to_its_language_then_the_tenant_default() {
        assert_eq!(fallback_chain(Some("pt-BR"), "en"), ["pt-BR", "pt", "en"]);
        assert_eq!(fallback_chain(Some("zh-Hant-TW"), "en"), ["zh-Hant-TW", "zh-Hant", "zh", "en"]);
        assert_eq!(fallback_chain(Some("en-GB"), "en"), ["en-GB", "en"]);
        assert_eq!(fallback_chain(None, "de"), ["de"]);
    }
}
