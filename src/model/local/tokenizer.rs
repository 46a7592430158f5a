//! Tokenizer and chat template of a local model: `tokenizer.json` through the
//! `tokenizers` crate, the `chat_template` of `tokenizer_config.json` rendered
//! with minijinja the way transformers does (trim/lstrip blocks, pycompat
//! methods, `raise_exception`, `tojson`), and training a small byte-level BPE
//! or word-level tokenizer with a ChatML template for `init` models.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use minijinja::{Environment, Error as JinjaError, ErrorKind};
use serde_json::{json, Value};
use tokenizers::Tokenizer;

use crate::model::Message;

/// ChatML, without a default system prompt (for `init` models).
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// A tokenizer with its chat template and special tokens.
pub struct ChatTokenizer {
    pub tokenizer: Tokenizer,
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
    /// `tokenizer_config.json` as read (written back on save).
    pub config: Value,
}

fn token_str(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

fn pick_template(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => {
            let named = |name: &str| {
                list.iter().find(|t| t.get("name").and_then(Value::as_str) == Some(name))
            };
            named("default")
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(String::from)
        }
        _ => None,
    }
}

impl ChatTokenizer {
    /// Reads `tokenizer.json`, `tokenizer_config.json` and, where present,
    /// `chat_template.jinja` from a model directory.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let tj = dir.join("tokenizer.json");
        let tokenizer =
            Tokenizer::from_file(&tj).map_err(|e| format!("loading tokenizer {}: {e}", tj.display()))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let config: Value = if cfg_path.is_file() {
            let text = std::fs::read_to_string(&cfg_path).map_err(|e| format!("reading {}: {e}", cfg_path.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", cfg_path.display()))?
        } else {
            json!({})
        };
        let jinja = dir.join("chat_template.jinja");
        let chat_template = if jinja.is_file() {
            Some(std::fs::read_to_string(&jinja).map_err(|e| format!("reading {}: {e}", jinja.display()))?)
        } else {
            pick_template(config.get("chat_template"))
        };
        Ok(Self {
            tokenizer,
            chat_template,
            bos_token: token_str(config.get("bos_token")),
            eos_token: token_str(config.get("eos_token")),
            pad_token: token_str(config.get("pad_token")),
            unk_token: token_str(config.get("unk_token")),
            config,
        })
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        let tj = dir.join("tokenizer.json");
        self.tokenizer.save(&tj, false).map_err(|e| format!("writing {}: {e}", tj.display()))?;
        let mut cfg = self.config.clone();
        if !cfg.is_object() {
            cfg = json!({});
        }
        if let Some(t) = &self.chat_template {
            cfg["chat_template"] = json!(t);
        }
        for (k, v) in [("bos_token", &self.bos_token), ("eos_token", &self.eos_token), ("pad_token", &self.pad_token)] {
            if let Some(v) = v {
                cfg[k] = json!(v);
            }
        }
        if cfg.get("tokenizer_class").is_none() {
            cfg["tokenizer_class"] = json!("PreTrainedTokenizerFast");
        }
        let path = dir.join("tokenizer_config.json");
        let text = serde_json::to_string_pretty(&cfg).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// Token ids of `text`, no special tokens added (special tokens written
    /// in the text are recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| format!("tokenizing: {e}"))
    }

    /// Whether a text can be tokenized in pieces cut right after special
    /// tokens (ids of the whole = ids of the pieces joined): true when the
    /// tokenizers crate treats every piece between added tokens alike —
    /// byte-level, whitespace, digit, punctuation or regex-split
    /// pre-tokenizers and per-character normalizers, and added tokens that
    /// strip nothing around them. False for anything else (e.g. Llama 2's
    /// Metaspace, which prepends its space to the first piece only), which
    /// then is always tokenized whole.
    pub fn splits_at_special_tokens(&self) -> bool {
        fn kinds_ok(v: &Value, ok: &[&str]) -> bool {
            match v {
                Value::Null => true,
                Value::Object(o) => match o.get("type").and_then(Value::as_str) {
                    Some("Sequence") => ["pretokenizers", "normalizers"]
                        .iter()
                        .filter_map(|k| o.get(*k).and_then(Value::as_array))
                        .flatten()
                        .all(|x| kinds_ok(x, ok)),
                    Some(t) => ok.contains(&t),
                    None => false,
                },
                _ => false,
            }
        }
        // Only the pre-tokenizer's and normalizer's settings are looked at
        // (serialising the whole tokenizer would write out its vocabulary).
        let (Ok(pre_tokenizer), Ok(normalizer)) = (
            serde_json::to_value(self.tokenizer.get_pre_tokenizer()),
            serde_json::to_value(self.tokenizer.get_normalizer()),
        ) else {
            return false;
        };
        let pre = ["ByteLevel", "Whitespace", "WhitespaceSplit", "Digits", "Punctuation", "Split"];
        let norm = ["NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "Replace"];
        let added = self.tokenizer.get_added_tokens_decoder();
        let plain_added = added.values().all(|t| !t.lstrip && !t.rstrip);
        // A cut after a special token holds only if no longer added token
        // could match across it.
        let prefix_free =
            added.values().all(|a| added.values().all(|b| a.content == b.content || !b.content.starts_with(&a.content)));
        kinds_ok(&pre_tokenizer, &pre) && kinds_ok(&normalizer, &norm) && plain_added && prefix_free
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_default()
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Renders the chat template (transformers' semantics).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, String> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| "the tokenizer has no chat_template".to_string())?;
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, JinjaError> {
            Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", template).map_err(|e| format!("chat template: {e}"))?;
        let tmpl = env.get_template("chat").map_err(|e| format!("chat template: {e}"))?;
        let msgs: Vec<Value> = messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect();
        let ctx = json!({
            "messages": msgs,
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token.clone().unwrap_or_default(),
            "eos_token": self.eos_token.clone().unwrap_or_default(),
            "pad_token": self.pad_token.clone().unwrap_or_default(),
            "unk_token": self.unk_token.clone().unwrap_or_default(),
        });
        tmpl.render(ctx).map_err(|e| format!("rendering chat template: {e}"))
    }

    /// Trains a tokenizer on `corpus`: `bpe` (byte-level) or `word_level`,
    /// with `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` (ids 0, 1, 2) and a
    /// ChatML template.
    pub fn train(corpus: &[String], vocab_size: usize, kind: &str) -> Result<Self, String> {
        use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
        use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
        use tokenizers::models::wordlevel::{WordLevel, WordLevelTrainer};
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        use tokenizers::pre_tokenizers::whitespace::Whitespace;
        use tokenizers::{
            AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, TokenizerBuilder,
        };
        let specials: Vec<AddedToken> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
            .iter()
            .map(|s| AddedToken::from(s.to_string(), true))
            .collect();
        let err = |e: tokenizers::Error| format!("training the tokenizer: {e}");
        let tokenizer: Tokenizer = match kind {
            "bpe" => {
                let mut trainer = BpeTrainerBuilder::new()
                    .vocab_size(vocab_size)
                    .min_frequency(1)
                    .show_progress(false)
                    .special_tokens(specials)
                    .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                    .build();
                let mut tk = TokenizerBuilder::<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>::new()
                    .with_model(BPE::default())
                    .with_pre_tokenizer(Some(ByteLevel::new(false, true, true).into()))
                    .with_decoder(Some(ByteLevelDecoder::default().into()))
                    .build()
                    .map_err(err)?;
                tk.train(&mut trainer, corpus.iter()).map_err(err)?;
                tk.into()
            }
            "word_level" => {
                let mut specials = specials;
                specials.push(AddedToken::from("<unk>".to_string(), true));
                let mut trainer = WordLevelTrainer::builder()
                    .vocab_size(vocab_size)
                    .show_progress(false)
                    .special_tokens(specials)
                    .build()
                    .map_err(|e| format!("word-level trainer: {e}"))?;
                let model = WordLevel::builder().unk_token("<unk>".into()).build().map_err(err)?;
                let mut tk = TokenizerBuilder::<WordLevel, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>::new()
                    .with_model(model)
                    .with_pre_tokenizer(Some(Whitespace {}.into()))
                    .build()
                    .map_err(err)?;
                tk.train(&mut trainer, corpus.iter()).map_err(err)?;
                tk.into()
            }
            other => return Err(format!("unknown tokenizer kind `{other}` (bpe, word_level)")),
        };
        let config = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": 4096,
            "added_tokens_decoder": {
                "0": {"content": "<|endoftext|>", "special": true},
                "1": {"content": "<|im_start|>", "special": true},
                "2": {"content": "<|im_end|>", "special": true},
            },
        });
        Ok(Self {
            tokenizer,
            chat_template: Some(CHATML_TEMPLATE.to_string()),
            bos_token: None,
            eos_token: Some("<|im_end|>".into()),
            pad_token: Some("<|endoftext|>".into()),
            unk_token: if kind == "word_level" { Some("<unk>".into()) } else { None },
            config,
        })
    }
}

/// A conversation's last prompt, tokenized: its text, ids and cut points
/// (the byte offset after each special token, and the ids before it).
struct Encoded {
    text: String,
    ids: Vec<u32>,
    cuts: Vec<(usize, usize)>,
    used: u64,
}

/// Tokenizes a growing conversation incrementally: the next prompt of a
/// session shares its start with the last one, so only the text after the
/// last special token they share is tokenized; the ids before it are the
/// last prompt's. Exact for tokenizers that split at special tokens
/// ([`ChatTokenizer::splits_at_special_tokens`]); others tokenize whole.
pub struct IncrementalEncoder {
    enabled: bool,
    special: HashSet<u32>,
    sessions: Mutex<(HashMap<u64, Encoded>, u64)>,
}

impl IncrementalEncoder {
    /// Sessions remembered (the least recently used go first).
    const SESSIONS: usize = 4096;

    pub fn new(tok: &ChatTokenizer) -> Self {
        let special = tok.tokenizer.get_added_tokens_decoder().into_iter().filter(|(_, t)| t.special).map(|(id, _)| id).collect();
        Self { enabled: tok.splits_at_special_tokens(), special, sessions: Mutex::new((HashMap::new(), 0)) }
    }

    /// Ids of `text` with the cut points after each special token:
    /// `(byte offset in text, ids before it)`.
    fn encode_with_cuts(&self, tok: &ChatTokenizer, text: &str) -> Result<(Vec<u32>, Vec<(usize, usize)>), String> {
        let enc = tok.tokenizer.encode(text, false).map_err(|e| format!("tokenizing: {e}"))?;
        let ids = enc.get_ids();
        let cuts = enc
            .get_offsets()
            .iter()
            .enumerate()
            .filter(|&(j, _)| self.special.contains(&ids[j]))
            .map(|(j, &(_, end))| (end, j + 1))
            .collect();
        Ok((ids.to_vec(), cuts))
    }

    /// Ids of `text`, the next prompt of `session`.
    pub fn encode(&self, tok: &ChatTokenizer, session: Option<u64>, text: String) -> Result<Vec<u32>, String> {
        let Some(session) = session.filter(|_| self.enabled) else { return tok.encode(&text) };
        let prev = self.sessions.lock().expect("encoder poisoned").0.remove(&session);
        let (ids, cuts) = match prev {
            Some(p) => {
                let shared = p.text.bytes().zip(text.bytes()).take_while(|(a, b)| a == b).count();
                match p.cuts.iter().rposition(|&(end, _)| end <= shared) {
                    Some(c) => {
                        let (end, n) = p.cuts[c];
                        let (rest, rest_cuts) = self.encode_with_cuts(tok, &text[end..])?;
                        let mut ids = p.ids;
                        ids.truncate(n);
                        ids.extend(rest);
                        let mut cuts = p.cuts;
                        cuts.truncate(c + 1);
                        cuts.extend(rest_cuts.into_iter().map(|(e, k)| (end + e, n + k)));
                        (ids, cuts)
                    }
                    None => self.encode_with_cuts(tok, &text)?,
                }
            }
            None => self.encode_with_cuts(tok, &text)?,
        };
        let mut guard = self.sessions.lock().expect("encoder poisoned");
        let (map, clock) = &mut *guard;
        *clock += 1;
        if map.len() >= Self::SESSIONS {
            let mut ages: Vec<u64> = map.values().map(|e| e.used).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            map.retain(|_, e| e.used > cutoff);
        }
        map.insert(session, Encoded { text, ids: ids.clone(), cuts, used: *clock });
        Ok(ids)
    }
}
