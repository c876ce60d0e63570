//! Instagram hashtag expansion by co-occurrence (see issue: Instagram-style hashtags).
