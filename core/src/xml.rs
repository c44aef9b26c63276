//! Reading small XML answers (AWS STS) by their structure, never by searching
//! the text. A substring search for `<SecretAccessKey>` finds it inside a
//! comment, inside CDATA, inside another element's text, or in an element of
//! another namespace, and stops at the first `</Tag>` even when the value was
//! split by a comment. Here the document is parsed (roxmltree: no DTD, so no
//! entity expansion), elements are matched by local name and namespace, each
//! wanted element must appear once, and a value is the whole text of a leaf.

use roxmltree::{Document, Node};

/// Largest XML document parsed.
pub const MAX_XML_BYTES: usize = 64 * 1024;

/// Why an XML answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XmlError {
    /// The text is larger than [`MAX_XML_BYTES`].
    #[error("XML document larger than {MAX_XML_BYTES} bytes")]
    TooLarge,
    /// The text is not well-formed XML (or declares a DTD).
    #[error("not XML: {0}")]
    NotXml(String),
    /// An element is not where the document's schema puts it.
    #[error("{0}")]
    Shape(String),
}

/// Parses a document of at most [`MAX_XML_BYTES`].
pub fn parse(text: &str) -> Result<Document<'_>, XmlError> {
    if text.len() > MAX_XML_BYTES {
        return Err(XmlError::TooLarge);
    }
    Document::parse(text).map_err(|e| XmlError::NotXml(e.to_string()))
}

/// Whether `node` is the element `name`, in namespace `ns` or in none.
pub fn is_element(node: Node<'_, '_>, name: &str, ns: &str) -> bool {
    node.is_element() && node.tag_name().name() == name && node.tag_name().namespace().is_none_or(|n| n == ns)
}

/// The one child element `name` (namespace `ns` or none) of `parent`; an error
/// if it is missing or appears twice.
pub fn only_child<'a, 'i>(parent: Node<'a, 'i>, name: &str, ns: &str) -> Result<Node<'a, 'i>, XmlError> {
    let mut found = parent.children().filter(|n| is_element(*n, name, ns));
    let first = found.next().ok_or_else(|| XmlError::Shape(format!("{name} missing in {}", parent.tag_name().name())))?;
    if found.next().is_some() {
        return Err(XmlError::Shape(format!("{name} appears twice in {}", parent.tag_name().name())));
    }
    Ok(first)
}

/// The text of a leaf element: every text and CDATA piece joined (comments
/// skipped), trimmed. An element inside the leaf is refused.
pub fn leaf_text(node: Node<'_, '_>) -> Result<String, XmlError> {
    if let Some(child) = node.children().find(Node::is_element) {
        return Err(XmlError::Shape(format!("unexpected element {:?} in {}", child.tag_name().name(), node.tag_name().name())));
    }
    Ok(node.children().filter(Node::is_text).filter_map(|n| n.text()).collect::<String>().trim().to_string())
}

/// `leaf_text` of the one child `name` of `parent`.
pub fn child_text(parent: Node<'_, '_>, name: &str, ns: &str) -> Result<String, XmlError> {
    leaf_text(only_child(parent, name, ns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "urn:test";

    #[test]
    fn a_value_split_by_a_comment_or_held_in_cdata_is_read_whole() {
        let doc = parse("<R xmlns='urn:test'><K>ab<!-- </K> -->cd</K><C><![CDATA[x<y&z]]></C></R>").unwrap();
        let root = doc.root_element();
        assert_eq!(child_text(root, "K", NS).unwrap(), "abcd");
        assert_eq!(child_text(root, "C", NS).unwrap(), "x<y&z");
    }

    #[test]
    fn an_element_only_mentioned_in_a_comment_cdata_or_text_is_missing() {
        for xml in ["<R><!-- <K>x</K> --></R>", "<R><![CDATA[<K>x</K>]]></R>", "<R>&lt;K&gt;x&lt;/K&gt;</R>", "<R><O><K>x</K></O></R>"] {
            let doc = parse(xml).unwrap();
            assert!(matches!(child_text(doc.root_element(), "K", NS), Err(XmlError::Shape(_))), "{xml}");
        }
    }

    #[test]
    fn twice_another_namespace_or_a_nested_element_is_refused() {
        let doc = parse("<R><K>a</K><K>b</K><o:K xmlns:o='urn:other'>c</o:K><L><x/>y</L></R>").unwrap();
        let root = doc.root_element();
        assert!(child_text(root, "K", NS).unwrap_err().to_string().contains("twice"));
        let doc = parse("<R><o:K xmlns:o='urn:other'>c</o:K></R>").unwrap();
        assert!(child_text(doc.root_element(), "K", NS).is_err());
        assert!(child_text(root, "L", NS).unwrap_err().to_string().contains("unexpected element"));
    }

    #[test]
    fn dtds_and_oversized_documents_are_refused() {
        let bomb = "<!DOCTYPE R [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;'>]><R>&b;</R>";
        assert!(matches!(parse(bomb), Err(XmlError::NotXml(_))));
        assert_eq!(parse(&format!("<R>{}</R>", " ".repeat(MAX_XML_BYTES))).unwrap_err(), XmlError::TooLarge);
        assert!(matches!(parse("<R><K>unclosed</R>"), Err(XmlError::NotXml(_))));
    }
}
