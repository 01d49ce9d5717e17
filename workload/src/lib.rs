//! Deterministic generated workloads for the benchmarks (`benches/`, `make bench`) and the
//! `workload` binary: RudderStack events shaped as the JavaScript, iOS, Android and
//! server-side SDKs send them.
//!
//! [`events`] gives N events, 20 % identify, 5 % group and 25 % each of track, page and
//! screen (in a shuffled order), from a pool of N/5 users so that users recur across a
//! workload the way they do in a real stream. Users belong to a small set of
//! [`ACCOUNTS`] (B2B companies): identify traits name the user's company (mostly as
//! `{id, name}`, for some users as a plain name), and group calls (`groupId` the account's
//! id) carry the account's traits, so that the company-id cache matters. Events carry the full RudderStack envelope (context
//! app/library/os/device/screen/locale/timezone/userAgent/traits/campaign, messageId,
//! anonymousId, userId for most users, the four timestamps); identify traits carry e-mail,
//! phone, name, an address object, a company object and createdAt, and for many users a
//! gender as people and SDKs spell it (`male`, `female`, `M`, `F`, ...) and a birthday in
//! one of the forms seen in the wild (`1980-09-20`, `20-09-1980` as in RudderStack's Kustomer
//! docs, RFC 3339, `09/20/1980`, Unix seconds); `context.sessionId` is a number as the SDKs
//! send it (milliseconds on the web, seconds on mobile); track properties mix strings,
//! numbers, booleans, `null`, dates, arrays and nested objects. One event is about 1–2 KB of
//! compact JSON. These are the shapes that Kustomer's contract does not take as they are
//! (spec section 11), so the workload exercises the schema stage.
//!
//! [`repeat_identify`] gives the repeat-user workload: a small pool of users sending
//! identify again and again, round-robin (the first `users` events are the cold ones).
//!
//! The same seed always gives the same events (`fastrand::Rng::with_seed`).

use fastrand::Rng;
use serde_json::{json, Map, Value};

/// 2025-11-27T00:00:00Z: the workload's clock starts here.
const START_MS: u64 = 1_764_201_600_000;

/// The company accounts users belong to.
pub const ACCOUNTS: usize = 24;

/// `n` events, 20 % identify, 5 % group, 25 % each of track, page and screen, from a pool
/// of `n / 5` users (at least one).
pub fn events(n: usize, seed: u64) -> Vec<Value> {
    let mut rng = Rng::with_seed(seed);
    let users: Vec<User> = (0..(n / 5).max(1)).map(|_| User::new(&mut rng)).collect();
    // Of every 20 events: 4 identify, 1 group, 5 each of track, page, screen.
    let kind_of = |i: usize| match i % 20 {
        0..=3 => Kind::Identify,
        4 => Kind::Group,
        5..=9 => Kind::Track,
        10..=14 => Kind::Page,
        _ => Kind::Screen,
    };
    let mut order: Vec<Kind> = (0..n).map(kind_of).collect();
    rng.shuffle(&mut order);
    let mut clock = Clock::new();
    order
        .into_iter()
        .map(|kind| {
            let user = &users[rng.usize(..users.len())];
            let at = clock.tick(&mut rng);
            match kind {
                Kind::Identify => identify(&mut rng, user, at),
                Kind::Track => track(&mut rng, user, at),
                Kind::Page => page(&mut rng, user, at),
                Kind::Screen => screen(&mut rng, user, at),
                Kind::Group => group(&mut rng, user, at),
            }
        })
        .collect()
}

/// `n` identify events from a pool of `users` identified users (userId and e-mail, no
/// kustomerId), round-robin: event `i` comes from user `i % users`. Traits vary a little
/// between calls (`lastSeenAt`, `plan`), as repeated identify calls do.
pub fn repeat_identify(users: usize, n: usize, seed: u64) -> Vec<Value> {
    let mut rng = Rng::with_seed(seed);
    let pool: Vec<User> = (0..users.max(1))
        .map(|_| {
            let mut user = User::new(&mut rng);
            if user.user_id.is_none() {
                user.user_id = Some(format!("usr_{}", hex(&mut rng, 6)));
            }
            user.kustomer_id = None;
            user.server = false;
            user
        })
        .collect();
    let mut clock = Clock::new();
    (0..n)
        .map(|i| {
            let at = clock.tick(&mut rng);
            identify(&mut rng, &pool[i % pool.len()], at)
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Identify,
    Track,
    Page,
    Screen,
    Group,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Platform {
    Web,
    Ios,
    Android,
}

/// One person of the pool, fixed across their events.
struct User {
    platform: Platform,
    /// Identify events from a server-side SDK: traits at the root, a thin context.
    server: bool,
    user_id: Option<String>,
    anonymous_id: String,
    kustomer_id: Option<String>,
    first: &'static str,
    last: &'static str,
    email: String,
    phone: String,
    username: String,
    /// The account (index into [`account`]) the user belongs to.
    account: usize,
    /// Identify calls name the company as a plain string, not as `{id, name}`.
    company_as_name: bool,
    address: Address,
    created_at: String,
    plan: &'static str,
    tags: Vec<&'static str>,
    locale: &'static str,
    timezone: &'static str,
    device: Device,
    /// Milliseconds since the epoch (the JavaScript SDK's form; mobile SDKs send seconds).
    session_id: u64,
    ip: String,
    gender: Option<&'static str>,
    /// `(trait key, value)`: `birthday` or `dob`, in one of several forms.
    birthday: Option<(&'static str, Value)>,
}

struct Address {
    street: String,
    city: &'static str,
    state: &'static str,
    postal_code: String,
    country: &'static str,
}

struct Device {
    id: String,
    model: &'static str,
    name: &'static str,
    os_version: &'static str,
    screen: (u32, u32, u32),
    app_version: &'static str,
    build: u32,
    user_agent: &'static str,
}

const FIRST: &[&str] = &[
    "Maren",
    "Theo",
    "Priya",
    "Jonas",
    "Aiko",
    "Lucía",
    "Oluwaseun",
    "Mateo",
    "Ingrid",
    "Ravi",
    "Chloé",
    "Dmitri",
    "Fatima",
    "Kai",
    "Noor",
    "Sven",
    "Amara",
    "Hugo",
    "Mei",
    "Zoë",
];
const LAST: &[&str] = &[
    "Okafor",
    "Lindqvist",
    "Raman",
    "Berger",
    "Tanaka",
    "García",
    "Adeyemi",
    "Rossi",
    "Haugen",
    "Iyer",
    "Dubois",
    "Volkov",
    "Haddad",
    "Nakamura",
    "O'Brien",
    "Kowalski",
    "Mensah",
    "Lefèvre",
    "Chen",
    "van der Berg",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "example.org",
    "example.net",
    "mail.example.de",
    "example.co.uk",
    "shop.example.com.au",
];
const COMPANIES: &[&str] = &[
    "Northwind Example Ltd",
    "Contoso Retail",
    "Fabrikam & Sons",
    "Tailspin Outfitters",
    "Wide World Importers",
    "Adventure Works GmbH",
    "Proseware, Inc.",
    "Litware Labs",
];
const STREETS: &[&str] = &[
    "Harbour Row",
    "Elm Road",
    "Kastanienallee",
    "Rue des Lilas",
    "Market Street",
    "Calle Mayor",
    "King William St",
    "Maple Avenue",
];
/// (city, state, country, locale, timezone)
const PLACES: &[(&str, &str, &str, &str, &str)] = &[
    ("Bristol", "England", "GB", "en-GB", "Europe/London"),
    ("Chicago", "IL", "US", "en-US", "America/Chicago"),
    ("Sydney", "NSW", "AU", "en-AU", "Australia/Sydney"),
    ("Berlin", "Berlin", "DE", "de-DE", "Europe/Berlin"),
    (
        "Lyon",
        "Auvergne-Rhône-Alpes",
        "FR",
        "fr-FR",
        "Europe/Paris",
    ),
    ("Austin", "TX", "US", "en-US", "America/Chicago"),
    ("Madrid", "Madrid", "ES", "es-ES", "Europe/Madrid"),
    ("Seattle", "WA", "US", "en-US", "America/Los_Angeles"),
];
const PLANS: &[&str] = &["free", "starter", "team", "business", "enterprise"];
/// Gender as identify calls spell it; Kustomer takes only `m`/`f`.
const GENDERS: &[&str] = &["male", "female", "M", "F", "f", "m", "Female", "Male"];
const TAGS: &[&str] = &[
    "newsletter",
    "beta-tester",
    "vip",
    "churn-risk",
    "wholesale",
];
const WEB_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
];
/// (model, name, os version, user agent)
const ANDROID: &[(&str, &str, &str, &str)] = &[
    (
        "Pixel 8",
        "shiba",
        "14",
        "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/AP2A.240805.005)",
    ),
    (
        "SM-S918B",
        "dm3q",
        "14",
        "Dalvik/2.1.0 (Linux; U; Android 14; SM-S918B Build/UP1A.231005.007)",
    ),
    (
        "moto g54 5G",
        "cancunf",
        "13",
        "Dalvik/2.1.0 (Linux; U; Android 13; moto g54 5G Build/T1TDS33.75-38-3-2)",
    ),
];
const IOS: &[(&str, &str, &str)] = &[
    ("iPhone15,3", "iPhone", "18.1"),
    ("iPhone16,2", "iPhone", "18.2"),
    ("iPad13,18", "iPad", "17.6"),
];

impl User {
    fn new(rng: &mut Rng) -> User {
        let platform = match rng.u8(..4) {
            0 | 1 => Platform::Web,
            2 => Platform::Ios,
            _ => Platform::Android,
        };
        let first = pick(rng, FIRST);
        let last = pick(rng, LAST);
        let place = pick(rng, PLACES);
        let local_part: String = format!("{first}.{last}")
            .to_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
            .collect();
        let number = rng.u32(1..9999);
        let anonymous_id = match platform {
            Platform::Ios => uuid(rng).to_uppercase(),
            _ => uuid(rng),
        };
        let device = match platform {
            Platform::Web => Device {
                id: String::new(),
                model: "",
                name: "",
                os_version: "",
                screen: pick(rng, &[(2, 1440, 900), (1, 1920, 1080), (2, 1512, 982)]),
                app_version: "3.11.7",
                build: 0,
                user_agent: pick(rng, WEB_AGENTS),
            },
            Platform::Android => {
                let (model, name, os_version, user_agent) = pick(rng, ANDROID);
                Device {
                    id: hex(rng, 16),
                    model,
                    name,
                    os_version,
                    screen: pick(rng, &[(420, 1080, 2400), (480, 1440, 3088)]),
                    app_version: pick(rng, &["5.8.2", "5.8.0", "5.7.4"]),
                    build: rng.u32(380..420),
                    user_agent,
                }
            }
            Platform::Ios => {
                let (model, name, os_version) = pick(rng, IOS);
                Device {
                    id: anonymous_id.clone(),
                    model,
                    name,
                    os_version,
                    screen: pick(rng, &[(3, 430, 932), (3, 393, 852), (2, 820, 1180)]),
                    app_version: pick(rng, &["5.8.1", "5.8.0"]),
                    build: rng.u32(2000..2100),
                    user_agent: "",
                }
            }
        };
        User {
            platform,
            server: rng.u8(..100) < 15,
            user_id: (rng.u8(..100) < 88).then(|| format!("usr_{}", hex(rng, 6))),
            anonymous_id,
            kustomer_id: (rng.u8(..100) < 5).then(|| hex(rng, 24)),
            first,
            last,
            email: format!("{local_part}{number}@{}", pick(rng, DOMAINS)),
            phone: format!(
                "+{} {} {:04} {:04}",
                rng.u32(1..50),
                rng.u32(20..999),
                rng.u32(..10_000),
                rng.u32(..10_000)
            ),
            username: format!("{}{}{number}", first.to_lowercase(), &last[..1]).to_lowercase(),
            account: rng.usize(..ACCOUNTS),
            company_as_name: rng.u8(..100) < 20,
            address: Address {
                street: format!("{} {}", rng.u32(1..250), pick(rng, STREETS)),
                city: place.0,
                state: place.1,
                postal_code: format!("{:05}", rng.u32(1000..99_999)),
                country: place.2,
            },
            created_at: iso(START_MS - rng.u64(86_400_000..3 * 365 * 86_400_000)),
            plan: pick(rng, PLANS),
            tags: (0..rng.usize(..3)).map(|_| pick(rng, TAGS)).collect(),
            locale: place.3,
            timezone: place.4,
            device,
            session_id: START_MS + rng.u64(..86_400_000),
            ip: format!(
                "{}.{}",
                pick(rng, &["192.0.2", "198.51.100", "203.0.113"]),
                rng.u32(1..255)
            ),
            gender: (rng.u8(..100) < 60).then(|| pick(rng, GENDERS)),
            birthday: (rng.u8(..100) < 40).then(|| birthday(rng)),
        }
    }

    fn name(&self) -> String {
        format!("{} {}", self.first, self.last)
    }

    /// Every trait an identify call sets (JS `rudderanalytics.identify(userId, traits)`).
    fn full_traits(&self, rng: &mut Rng, at: u64) -> Value {
        let mut traits = Map::new();
        traits.insert("name".into(), json!(self.name()));
        traits.insert("firstName".into(), json!(self.first));
        traits.insert("lastName".into(), json!(self.last));
        traits.insert("email".into(), json!(self.email));
        traits.insert("phone".into(), json!(self.phone));
        traits.insert("userName".into(), json!(self.username));
        let account = account(self.account);
        let company = if self.company_as_name {
            json!(account.name)
        } else {
            json!({"id": account.id, "name": account.name})
        };
        traits.insert("company".into(), company);
        traits.insert(
            "address".into(),
            json!({
                "street": self.address.street,
                "city": self.address.city,
                "state": self.address.state,
                "postalCode": self.address.postal_code,
                "country": self.address.country,
            }),
        );
        traits.insert("createdAt".into(), json!(self.created_at));
        traits.insert("lastSeenAt".into(), json!(iso(at)));
        traits.insert("plan".into(), json!(self.plan_now(rng)));
        if !self.tags.is_empty() {
            traits.insert("tags".into(), json!(self.tags));
        }
        if rng.bool() {
            traits.insert(
                "avatar".into(),
                json!(format!(
                    "https://avatars.example.com/u/{}.png",
                    self.username
                )),
            );
        }
        if rng.u8(..4) == 0 {
            traits.insert(
                "website".into(),
                json!(format!("https://{}.example.net", self.username)),
            );
        }
        traits.insert("marketingOptIn".into(), json!(rng.bool()));
        traits.insert("lifetimeOrders".into(), json!(rng.u32(..40)));
        if let Some(gender) = self.gender {
            traits.insert("gender".into(), json!(gender));
        }
        if let Some((key, value)) = &self.birthday {
            traits.insert((*key).into(), value.clone());
        }
        Value::Object(traits)
    }

    /// What the mobile SDKs and the JS SDK keep in `context.traits` between identify calls.
    fn kept_traits(&self) -> Value {
        let mut traits = Map::new();
        if self.platform != Platform::Web {
            traits.insert("anonymousId".into(), json!(self.anonymous_id));
        }
        if let Some(id) = &self.user_id {
            if self.platform != Platform::Web {
                traits.insert("userId".into(), json!(id));
            }
            traits.insert("email".into(), json!(self.email));
            traits.insert("name".into(), json!(self.name()));
        }
        Value::Object(traits)
    }

    fn plan_now(&self, rng: &mut Rng) -> &'static str {
        if rng.u8(..10) == 0 {
            pick(rng, PLANS)
        } else {
            self.plan
        }
    }
}

/// Event timestamps: a few seconds apart, monotonic.
struct Clock {
    now: u64,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            now: START_MS + 8 * 3_600_000,
        }
    }

    fn tick(&mut self, rng: &mut Rng) -> u64 {
        self.now += rng.u64(50..4_000);
        self.now
    }
}

/// The envelope every SDK adds; `context` and the type-specific fields come from the caller.
fn envelope(
    rng: &mut Rng,
    user: &User,
    kind: &str,
    at: u64,
    context: Value,
    specific: Vec<(&str, Value)>,
) -> Value {
    let mut event = Map::new();
    event.insert("anonymousId".into(), json!(user.anonymous_id));
    event.insert(
        "channel".into(),
        json!(match (user.platform, kind) {
            (_, "page") | (Platform::Web, "identify" | "track") => "web",
            _ => "mobile",
        }),
    );
    event.insert("context".into(), context);
    for (key, value) in specific {
        event.insert(key.into(), value);
    }
    event.insert("integrations".into(), json!({"All": true}));
    let message_id = match user.platform {
        Platform::Android => format!("{at}-{}", uuid(rng)),
        Platform::Ios => uuid(rng).to_uppercase(),
        Platform::Web => uuid(rng),
    };
    event.insert("messageId".into(), json!(message_id));
    let sent = at + rng.u64(5..900);
    event.insert("originalTimestamp".into(), json!(iso(at)));
    event.insert("receivedAt".into(), json!(iso(sent + rng.u64(20..400))));
    event.insert("request_ip".into(), json!(user.ip));
    event.insert("rudderId".into(), json!(uuid(rng)));
    event.insert("sentAt".into(), json!(iso(sent)));
    event.insert("timestamp".into(), json!(iso(at + rng.u64(10..300))));
    event.insert("type".into(), json!(kind));
    if let Some(id) = &user.user_id {
        event.insert("userId".into(), json!(id));
    }
    // Keys sorted as the RudderStack server stores them.
    let mut entries: Vec<(String, Value)> = event.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Object(entries.into_iter().collect())
}

/// The SDK context. `web` forces the JavaScript SDK (page events), `mobile` a mobile SDK.
fn context(rng: &mut Rng, user: &User, platform: Platform, traits: Value, page: Value) -> Value {
    let mut context = Map::new();
    let device = &user.device;
    match platform {
        Platform::Web => {
            context.insert(
                "app".into(),
                json!({"build": "1.0.0", "name": "RudderLabs JavaScript SDK",
                       "namespace": "com.rudderlabs.javascript", "version": "3.11.7"}),
            );
            context.insert("campaign".into(), campaign(rng));
            context.insert(
                "library".into(),
                json!({"name": "RudderLabs JavaScript SDK", "version": "3.11.7"}),
            );
            context.insert("locale".into(), json!(user.locale));
            context.insert("os".into(), json!({"name": "", "version": ""}));
            context.insert("page".into(), page);
            let (density, width, height) = if user.platform == Platform::Web {
                device.screen
            } else {
                (2, 1440, 900)
            };
            context.insert(
                "screen".into(),
                json!({"density": density, "width": width, "height": height,
                       "innerWidth": width - rng.u32(0..20), "innerHeight": height - rng.u32(60..140)}),
            );
        }
        Platform::Android | Platform::Ios => {
            let android = platform == Platform::Android;
            let namespace = if android {
                "com.example.shop"
            } else {
                "com.example.shop.ios"
            };
            context.insert(
                "app".into(),
                json!({"build": device.build.to_string(), "name": "Example Shop",
                       "namespace": namespace, "version": device.app_version}),
            );
            let (model, name, os_version) = if device.model.is_empty() {
                ("Pixel 8", "shiba", "14")
            } else {
                (device.model, device.name, device.os_version)
            };
            let id = if device.id.is_empty() {
                user.anonymous_id.clone()
            } else {
                device.id.clone()
            };
            let device_json = if android {
                json!({"id": id, "manufacturer": "Google", "model": model, "name": name,
                       "type": "Android", "adTrackingEnabled": rng.bool()})
            } else {
                json!({"id": id, "manufacturer": "Apple", "model": model, "name": name,
                       "type": "iOS", "attTrackingStatus": rng.u8(..4)})
            };
            context.insert("device".into(), device_json);
            context.insert(
                "library".into(),
                if android {
                    json!({"name": "com.rudderstack.android.sdk.core", "version": "1.21.0"})
                } else {
                    json!({"name": "rudder-ios-library", "version": "1.29.1"})
                },
            );
            context.insert("locale".into(), json!(user.locale));
            let wifi = rng.u8(..3) > 0;
            context.insert(
                "network".into(),
                json!({"carrier": "Example Mobile", "bluetooth": false, "cellular": !wifi, "wifi": wifi}),
            );
            context.insert(
                "os".into(),
                json!({"name": if android { "Android" } else { "iOS" }, "version": os_version}),
            );
            let (density, width, height) = device.screen;
            context.insert(
                "screen".into(),
                json!({"density": density, "width": width, "height": height}),
            );
        }
    }
    // The JavaScript SDK counts in milliseconds, the mobile SDKs in seconds: both numbers.
    let session_id = match platform {
        Platform::Web => user.session_id,
        Platform::Ios | Platform::Android => user.session_id / 1000,
    };
    context.insert("sessionId".into(), json!(session_id));
    context.insert("timezone".into(), json!(user.timezone));
    context.insert("traits".into(), traits);
    match platform {
        Platform::Web => {
            let agent = if user.platform == Platform::Web {
                device.user_agent
            } else {
                WEB_AGENTS[0]
            };
            context.insert("userAgent".into(), json!(agent));
        }
        Platform::Android if !device.user_agent.is_empty() => {
            context.insert("userAgent".into(), json!(device.user_agent));
        }
        _ => {}
    }
    if let Some(kid) = &user.kustomer_id {
        context.insert(
            "externalId".into(),
            json!([{"type": "kustomerId", "id": kid}]),
        );
    }
    Value::Object(context)
}

fn campaign(rng: &mut Rng) -> Value {
    if rng.u8(..3) == 0 {
        json!({"name": pick(rng, &["winter-sale", "spring-launch", "black-friday"]),
               "source": pick(rng, &["newsletter", "google", "partner"]),
               "medium": pick(rng, &["email", "cpc", "referral"])})
    } else {
        json!({})
    }
}

/// (path, title, category)
const PAGES: &[(&str, &str, &str)] = &[
    ("/", "Example Shop", "Home"),
    ("/pricing", "Pricing | Example", "Marketing"),
    ("/products/trail-socks", "Trail running socks", "Product"),
    ("/blog/new-plans", "Our new plans", "Blog"),
    ("/checkout", "Checkout", "Checkout"),
    ("/account/settings", "Account settings", "Account"),
    ("/help/returns", "Returns & refunds", "Help"),
];

fn page_fields(rng: &mut Rng) -> (Value, &'static str, &'static str) {
    let (path, title, category) = pick(rng, PAGES);
    let search = if rng.u8(..3) == 0 {
        "?utm_source=newsletter&utm_medium=email&utm_campaign=winter-sale"
    } else {
        ""
    };
    let url = format!("https://www.example.com{path}{search}");
    let (referrer, domain) = pick(
        rng,
        &[
            ("https://www.google.com/", "www.google.com"),
            ("https://www.example.com/", "www.example.com"),
            ("$direct", ""),
        ],
    );
    let page = json!({
        "path": path, "referrer": referrer, "referring_domain": domain, "search": search,
        "tab_url": url, "title": title, "url": url,
        "initial_referrer": "$direct", "initial_referring_domain": "",
    });
    (page, title, category)
}

fn identify(rng: &mut Rng, user: &User, at: u64) -> Value {
    let traits = user.full_traits(rng, at);
    if user.server {
        // Server-side SDK (Node): traits at the root, a thin context.
        let mut context = json!({
            "library": {"name": "@rudderstack/rudder-sdk-node", "version": "2.1.4"},
            "traits": {"email": user.email},
        });
        if let Some(kid) = &user.kustomer_id {
            context["externalId"] = json!([{"type": "kustomerId", "id": kid}]);
        }
        return envelope(rng, user, "identify", at, context, vec![("traits", traits)]);
    }
    let platform = user.platform;
    let (page, _, _) = page_fields(rng);
    let context = context(rng, user, platform, traits, page);
    envelope(rng, user, "identify", at, context, Vec::new())
}

fn product(rng: &mut Rng) -> Value {
    let (id, name, category, price) = pick(
        rng,
        &[
            ("SKU-3310", "Trail running socks", "Apparel", 14.5),
            ("SKU-0875", "Insulated bottle 750 ml", "Gear", 46.0),
            ("SKU-1204", "Merino base layer", "Apparel", 89.95),
            ("SKU-7781", "Headlamp 400 lm", "Gear", 39.0),
            ("SKU-5520", "Trekking poles (pair)", "Gear", 119.0),
        ],
    );
    json!({"product_id": id, "sku": id, "name": name, "price": price,
           "quantity": rng.u32(1..4), "category": category,
           "url": format!("https://www.example.com/products/{}", id.to_lowercase())})
}

fn track(rng: &mut Rng, user: &User, at: u64) -> Value {
    let (name, properties) = match rng.u8(..8) {
        0 => {
            let products: Vec<Value> = (0..rng.usize(1..4)).map(|_| product(rng)).collect();
            let revenue: f64 = products
                .iter()
                .map(|p| p["price"].as_f64().unwrap_or(0.0) * p["quantity"].as_f64().unwrap_or(1.0))
                .sum();
            let revenue = (revenue * 100.0).round() / 100.0;
            (
                "Order Completed",
                json!({"order_id": format!("ORD-{}", rng.u32(100_000..999_999)),
                       "checkout_id": format!("chk_{}", hex(rng, 6)),
                       "total": revenue + 7.95, "revenue": revenue, "shipping": 7.95, "tax": 0,
                       "discount": if rng.bool() { 10 } else { 0 },
                       "coupon": if rng.bool() { json!("WINTER10") } else { Value::Null },
                       "currency": "USD", "email": user.email, "first_order": rng.bool(),
                       "delivered_by": iso(at + 5 * 86_400_000)[..10], "products": products}),
            )
        }
        1 => {
            let mut p = product(rng);
            p["brand"] = json!("Example Outdoor");
            p["variant"] = json!(pick(rng, &["S", "M", "L", "XL"]));
            p["currency"] = json!("EUR");
            p["position"] = json!(rng.u32(1..24));
            p["in_stock"] = json!(rng.u8(..5) > 0);
            p["image_url"] = json!("https://cdn.example.com/img/p/1.jpg");
            ("Product Viewed", p)
        }
        2 => {
            let mut p = product(rng);
            p["cart_id"] = json!(format!("cart_{}", hex(rng, 8)));
            ("Product Added", p)
        }
        3 => (
            "Subscription Upgraded",
            json!({"plan": "business", "previous_plan": user.plan, "seats": rng.u32(2..200),
                   "billing_period": pick(rng, &["monthly", "annual"]), "mrr": rng.u32(50..5000),
                   "trial": rng.bool(), "renews_at": iso(at + 365 * 86_400_000),
                   "features": ["sso", "audit-log", "priority-support"]}),
        ),
        4 => (
            "Signed Up",
            json!({"method": pick(rng, &["email", "google", "apple"]),
                   "referral_code": if rng.bool() { Value::Null } else { json!(hex(rng, 8)) },
                   "marketing_opt_in": rng.bool(), "signup_at": iso(at), "plan": "free",
                   "experiments": {"onboarding_v2": rng.bool(), "pricing_test": "B"}}),
        ),
        5 => (
            "Products Searched",
            json!({"query": pick(rng, &["trail socks", "bottle", "headlamp", "rain jacket"]),
                   "results": rng.u32(..120), "page": 1,
                   "filters": {"category": "Gear", "price_max": 150, "in_stock": true,
                               "brands": ["Example Outdoor", "Contoso"]},
                   "sort": "relevance"}),
        ),
        6 => (
            "Support Ticket Opened",
            json!({"ticket_id": format!("T-{}", rng.u32(10_000..99_999)),
                   "subject": "Where is my order?", "priority": pick(rng, &["low", "normal", "high"]),
                   "channel": "in-app", "tags": ["shipping", "order-status"],
                   "order_id": format!("ORD-{}", rng.u32(100_000..999_999)),
                   "created_at": iso(at), "attachments": rng.u32(..3),
                   "metadata": {"app_version": user.device.app_version, "os": user.device.os_version}}),
        ),
        _ => {
            let products: Vec<Value> = (0..rng.usize(1..3)).map(|_| product(rng)).collect();
            (
                "Checkout Started",
                json!({"order_id": format!("ORD-{}", rng.u32(100_000..999_999)),
                       "value": rng.u32(20..400), "currency": "USD", "products": products}),
            )
        }
    };
    in_app(
        rng,
        user,
        "track",
        at,
        vec![("event", json!(name)), ("properties", properties)],
    )
}

/// A call made in the user's app or page (track, group): the SDK's context with the traits
/// it keeps, then the envelope.
fn in_app(rng: &mut Rng, user: &User, kind: &str, at: u64, fields: Vec<(&str, Value)>) -> Value {
    let (page, _, _) = page_fields(rng);
    let context = context(rng, user, user.platform, user.kept_traits(), page);
    envelope(rng, user, kind, at, context, fields)
}

/// Every account of the pool: (externalId, name), as group calls and identify traits name them.
pub fn accounts() -> Vec<(String, String)> {
    (0..ACCOUNTS)
        .map(|index| {
            let account = account(index);
            (account.id, account.name)
        })
        .collect()
}

/// One company account: what group calls say of it.
struct Account {
    id: String,
    name: String,
    website: String,
    employees: u32,
    industry: &'static str,
}

/// Account `index` of the fixed pool (the same for every seed): a company of [`COMPANIES`]
/// in one of three regions.
fn account(index: usize) -> Account {
    let base = COMPANIES[index % COMPANIES.len()];
    let region = ["", " Europe", " Asia Pacific"][index / COMPANIES.len() % 3];
    let slug: String = format!("{base}{region}")
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    Account {
        id: format!("acct_{}", 20_000 + index * 37),
        name: format!("{base}{region}"),
        website: format!("https://www.{slug}.example.com"),
        employees: 12 + (index as u32 * 97) % 4_000,
        industry: ["Retail", "Logistics", "Software", "Outdoor", "Wholesale"][index % 5],
    }
}

/// `rudderanalytics.group(accountId, traits)`: the user's account and its traits.
fn group(rng: &mut Rng, user: &User, at: u64) -> Value {
    let account = account(user.account);
    let mut traits = Map::new();
    traits.insert("name".into(), json!(account.name));
    traits.insert("website".into(), json!(account.website));
    // The JS SDK passes what the page had: a number, or the text of a form field.
    let employees = if rng.bool() {
        json!(account.employees)
    } else {
        json!(account.employees.to_string())
    };
    traits.insert("employees".into(), employees);
    traits.insert("industry".into(), json!(account.industry));
    traits.insert("plan".into(), json!(user.plan_now(rng)));
    traits.insert(
        "customObject".into(),
        json!({"seatsNum": (account.employees / 10).max(1).to_string(),
               "renewalAt": iso(at + 200 * 86_400_000)[..10],
               "tierStr": user.plan, "isPartnerBool": if account.employees > 1000 { "true" } else { "false" }}),
    );
    in_app(
        rng,
        user,
        "group",
        at,
        vec![
            ("groupId", json!(account.id)),
            ("traits", Value::Object(traits)),
        ],
    )
}

fn page(rng: &mut Rng, user: &User, at: u64) -> Value {
    let (page, title, category) = page_fields(rng);
    let mut props = Map::new();
    props.insert("category".into(), json!(category));
    props.insert("name".into(), json!(title));
    if let Value::Object(fields) = &page {
        props.extend(
            fields
                .iter()
                .filter(|(key, _)| *key != "referring_domain")
                .map(|(key, value)| (key.clone(), value.clone())),
        );
    }
    let context = context(rng, user, Platform::Web, user.kept_traits(), page);
    envelope(
        rng,
        user,
        "page",
        at,
        context,
        vec![
            ("category", json!(category)),
            ("name", json!(title)),
            ("properties", Value::Object(props)),
        ],
    )
}

fn screen(rng: &mut Rng, user: &User, at: u64) -> Value {
    let name = pick(
        rng,
        &[
            "Home",
            "Cart",
            "Product Detail",
            "Search",
            "Order History",
            "Settings",
        ],
    );
    let properties = json!({
        "name": name,
        "from_screen": pick(rng, &["Home", "Search", "Product Detail"]),
        "automatic": rng.u8(..4) == 0,
        "items_in_cart": rng.u32(..5),
        "cart_value": (rng.u32(..40_000) as f64) / 100.0,
    });
    let platform = match user.platform {
        Platform::Web => Platform::Android,
        other => other,
    };
    let context = context(rng, user, platform, user.kept_traits(), Value::Null);
    envelope(
        rng,
        user,
        "screen",
        at,
        context,
        vec![
            ("event", json!(name)),
            ("name", json!(name)),
            ("properties", properties),
        ],
    )
}

/// A birthday as identify calls send it: under `birthday` or `dob`, as an ISO date, the
/// day-first form of RudderStack's Kustomer docs, RFC 3339, US order or Unix seconds.
fn birthday(rng: &mut Rng) -> (&'static str, Value) {
    let (year, month, day) = (rng.u32(1950..2006), rng.u32(1..13), rng.u32(1..29));
    let key = if rng.u8(..4) == 0 { "dob" } else { "birthday" };
    let value = match rng.u8(..5) {
        0 => json!(format!("{year}-{month:02}-{day:02}")),
        1 => json!(format!("{day:02}-{month:02}-{year}")),
        2 => json!(format!("{year}-{month:02}-{day:02}T00:00:00.000Z")),
        3 => json!(format!("{month:02}/{day:02}/{year}")),
        // Noon UTC of that day, in seconds (days from 1970 by the civil calendar).
        _ => json!(days_from_civil(year, month, day) * 86_400 + 43_200),
    };
    (key, value)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days-from-civil).
fn days_from_civil(year: u32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())]
}

fn hex(rng: &mut Rng, digits: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    (0..digits).map(|_| HEX[rng.usize(..16)] as char).collect()
}

/// A version-4 UUID, lower case.
fn uuid(rng: &mut Rng) -> String {
    format!(
        "{}-{}-4{}-{}{}-{}",
        hex(rng, 8),
        hex(rng, 4),
        hex(rng, 3),
        pick(rng, &['8', '9', 'a', 'b']),
        hex(rng, 3),
        hex(rng, 12)
    )
}

/// Epoch milliseconds as `2025-11-27T10:15:11.042Z` (the fleet test's workload too).
pub fn iso(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_events() {
        assert_eq!(events(200, 7), events(200, 7));
        assert_ne!(events(200, 7), events(200, 8));
        assert_eq!(repeat_identify(5, 50, 3), repeat_identify(5, 50, 3));
    }

    #[test]
    fn the_mix_of_types_of_realistic_size() {
        let all = events(1000, 1);
        for (kind, count) in [
            ("identify", 200),
            ("group", 50),
            ("track", 250),
            ("page", 250),
            ("screen", 250),
        ] {
            assert_eq!(
                all.iter().filter(|e| e["type"] == kind).count(),
                count,
                "{kind}"
            );
        }
        let sizes: Vec<usize> = all.iter().map(|e| e.to_string().len()).collect();
        let mean = sizes.iter().sum::<usize>() / sizes.len();
        assert!((1000..=2000).contains(&mean), "mean size {mean}");
        assert!(all.iter().filter(|e| e.get("userId").is_some()).count() > 800);
    }

    #[test]
    fn shapes_kustomer_does_not_take_as_they_are() {
        let all = events(2000, 5);
        let identify: Vec<&Value> = all.iter().filter(|e| e["type"] == "identify").collect();
        let genders: std::collections::BTreeSet<&str> = identify
            .iter()
            .filter_map(|e| {
                e.pointer("/context/traits/gender")
                    .or(e.pointer("/traits/gender"))
            })
            .filter_map(Value::as_str)
            .collect();
        for spelling in ["male", "female", "M", "F"] {
            assert!(genders.contains(spelling), "{genders:?}");
        }
        let birthdays: Vec<&Value> = identify
            .iter()
            .flat_map(|e| {
                ["/context/traits", "/traits"]
                    .into_iter()
                    .flat_map(move |at| {
                        ["birthday", "dob"]
                            .into_iter()
                            .filter_map(move |key| e.pointer(&format!("{at}/{key}")))
                    })
            })
            .collect();
        assert!(birthdays.iter().any(|b| b.is_number()));
        for shape in [
            |s: &str| s.len() == 10 && s.as_bytes()[4] == b'-',
            |s: &str| s.len() == 10 && s.as_bytes()[2] == b'-',
            |s: &str| s.contains('/'),
            |s: &str| s.ends_with('Z'),
        ] {
            assert!(birthdays.iter().filter_map(|b| b.as_str()).any(shape));
        }
        // Every tracking event carries a numeric session id: ms on the web, seconds on
        // mobile (server-side identify calls have none).
        let sessions: Vec<u64> = all
            .iter()
            .filter(|e| e["type"] != "identify")
            .map(|e| e["context"]["sessionId"].as_u64().unwrap())
            .collect();
        assert!(sessions.iter().any(|s| *s > 100_000_000_000));
        assert!(sessions.iter().any(|s| *s < 100_000_000_000));
        let properties: Vec<&Value> = all.iter().filter_map(|e| e.get("properties")).collect();
        assert!(properties
            .iter()
            .any(|p| p.as_object().unwrap().values().any(Value::is_null)));
        assert!(properties
            .iter()
            .any(|p| p.as_object().unwrap().values().any(Value::is_boolean)));
        assert!(properties
            .iter()
            .any(|p| p.as_object().unwrap().values().any(Value::is_object)));
    }

    #[test]
    fn companies_come_from_a_small_set_of_accounts() {
        let all = events(2000, 3);
        let mut ids = std::collections::BTreeSet::new();
        let mut names = std::collections::BTreeSet::new();
        for event in &all {
            match event["type"].as_str() {
                Some("group") => {
                    ids.insert(event["groupId"].as_str().unwrap().to_string());
                    names.insert(event["traits"]["name"].as_str().unwrap().to_string());
                }
                Some("identify") => {
                    let company = event
                        .pointer("/traits/company")
                        .or(event.pointer("/context/traits/company"))
                        .unwrap();
                    match company {
                        Value::String(name) => names.insert(name.clone()),
                        _ => ids.insert(company["id"].as_str().unwrap().to_string()),
                    };
                }
                _ => {}
            }
        }
        assert!(ids.len() <= ACCOUNTS && ids.len() > ACCOUNTS / 2, "{ids:?}");
        assert!(names.len() <= ACCOUNTS, "{names:?}");
        // Names and ids of one account agree.
        assert_eq!(account(5).id, account(5).id);
        assert_ne!(account(0).name, account(COMPANIES.len()).name);
    }

    #[test]
    fn birthdays_in_seconds_are_the_right_day() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        assert_eq!(
            iso(days_from_civil(1980, 9, 20) as u64 * 86_400_000),
            "1980-09-20T00:00:00.000Z"
        );
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso(START_MS), "2025-11-27T00:00:00.000Z");
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }
}
