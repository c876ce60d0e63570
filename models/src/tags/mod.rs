//! Hashtag decoders.
