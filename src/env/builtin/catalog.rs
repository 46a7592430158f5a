//! The world's vocabulary: ALFRED receptacle and object types, the
//! per-object location priors (where things tend to be), what can be heated,
//! cooled, cleaned or looked at, and where each may be put as a task target.
//!
//! Everything here is frozen with `GENERATOR_VERSION`: changing a weight
//! changes the tasks.

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($var:ident => $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($var),* }
        impl $name {
            /// All variants, in alphabetical order of their names.
            pub const ALL: &'static [$name] = &[$($name::$var),*];
            /// The ALFWorld name, e.g. `"countertop"`.
            pub fn name(self) -> &'static str { match self { $($name::$var => $s),* } }
            /// Inverse of [`Self::name`] (lowercase, exact).
            pub fn from_name(s: &str) -> Option<$name> {
                match s { $($s => Some($name::$var),)* _ => None }
            }
        }
    };
}

named_enum! {
    /// A receptacle type (declared alphabetically: `Ord` is name order).
    RecepType {
        Armchair => "armchair", Bathtubbasin => "bathtubbasin", Bed => "bed",
        Cabinet => "cabinet", Cart => "cart", Coffeemachine => "coffeemachine",
        Coffeetable => "coffeetable", Countertop => "countertop", Desk => "desk",
        Diningtable => "diningtable", Drawer => "drawer", Dresser => "dresser",
        Fridge => "fridge", Garbagecan => "garbagecan",
        Handtowelholder => "handtowelholder", Laundryhamper => "laundryhamper",
        Microwave => "microwave", Ottoman => "ottoman", Safe => "safe",
        Shelf => "shelf", Sidetable => "sidetable", Sinkbasin => "sinkbasin",
        Sofa => "sofa", Stoveburner => "stoveburner", Toaster => "toaster",
        Toilet => "toilet", Toiletpaperhanger => "toiletpaperhanger",
        Towelholder => "towelholder", Tvstand => "tvstand",
    }
}

named_enum! {
    /// An object type (declared alphabetically: `Ord` is name order).
    ObjType {
        Alarmclock => "alarmclock", Apple => "apple", Book => "book", Bowl => "bowl",
        Box => "box", Bread => "bread", Butterknife => "butterknife", Candle => "candle",
        Cd => "cd", Cellphone => "cellphone", Cloth => "cloth", Creditcard => "creditcard",
        Cup => "cup", Desklamp => "desklamp", Dishsponge => "dishsponge", Egg => "egg",
        Fork => "fork", Handtowel => "handtowel", Houseplant => "houseplant",
        Kettle => "kettle", Keychain => "keychain", Knife => "knife", Ladle => "ladle",
        Laptop => "laptop", Lettuce => "lettuce", Mug => "mug", Newspaper => "newspaper",
        Pan => "pan", Papertowelroll => "papertowelroll", Pen => "pen", Pencil => "pencil",
        Peppershaker => "peppershaker", Pillow => "pillow", Plate => "plate", Pot => "pot",
        Potato => "potato", Remotecontrol => "remotecontrol", Saltshaker => "saltshaker",
        Soapbar => "soapbar", Soapbottle => "soapbottle", Spatula => "spatula",
        Spoon => "spoon", Spraybottle => "spraybottle", Statue => "statue",
        Tissuebox => "tissuebox", Toiletpaper => "toiletpaper", Tomato => "tomato",
        Towel => "towel", Vase => "vase", Watch => "watch", Winebottle => "winebottle",
    }
}

impl RecepType {
    /// Openable receptacles start closed; searching them costs two steps.
    pub fn openable(self) -> bool {
        matches!(
            self,
            RecepType::Cabinet
                | RecepType::Drawer
                | RecepType::Fridge
                | RecepType::Microwave
                | RecepType::Safe
        )
    }

    /// The plural used in abstract plans ("countertops", "shelves").
    pub fn plural(self) -> String {
        match self {
            RecepType::Shelf => "shelves".into(),
            t => format!("{}s", t.name()),
        }
    }

    /// Types that usually come in several instances (plans name them plural).
    pub fn usually_many(self) -> bool {
        use RecepType::*;
        matches!(
            self,
            Armchair
                | Cabinet
                | Countertop
                | Drawer
                | Shelf
                | Sidetable
                | Stoveburner
                | Towelholder
                | Handtowelholder
        )
    }

    /// Parses a type name or its plural ("countertops", "shelves").
    pub fn from_word(w: &str) -> Option<RecepType> {
        if let Some(t) = RecepType::from_name(w) {
            return Some(t);
        }
        if w == "shelves" {
            return Some(RecepType::Shelf);
        }
        w.strip_suffix('s').and_then(RecepType::from_name)
    }
}

/// A room kind. Bit flags so objects can belong to several.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RoomKind {
    Kitchen,
    Livingroom,
    Bedroom,
    Bathroom,
}

impl RoomKind {
    pub const ALL: [RoomKind; 4] = [
        RoomKind::Kitchen,
        RoomKind::Livingroom,
        RoomKind::Bedroom,
        RoomKind::Bathroom,
    ];
    pub fn bit(self) -> u8 {
        1 << self as u8
    }
    pub fn name(self) -> &'static str {
        match self {
            RoomKind::Kitchen => "kitchen",
            RoomKind::Livingroom => "livingroom",
            RoomKind::Bedroom => "bedroom",
            RoomKind::Bathroom => "bathroom",
        }
    }
}

pub(crate) const K: u8 = 1;
pub(crate) const L: u8 = 2;
pub(crate) const B: u8 = 4;
pub(crate) const T: u8 = 8;

pub(crate) const HEAT: u8 = 1;
pub(crate) const COOL: u8 = 2;
pub(crate) const CLEAN: u8 = 4;
pub(crate) const LOOK: u8 = 8;
/// Can be picked up (desklamps and houseplants cannot).
pub(crate) const PICK: u8 = 16;
/// May be the object of a pick_and_place / pick_two task.
pub(crate) const PLACE: u8 = 32;

/// Static facts about one object type.
pub(crate) struct ObjInfo {
    /// Room kinds (bit set of K/L/B/T) where it appears.
    pub kinds: u8,
    /// Location prior: weight per receptacle type (only types present in a
    /// room count; the weights are renormalised over those).
    pub priors: &'static [(RecepType, u16)],
    /// HEAT | COOL | CLEAN | LOOK | PICK | PLACE.
    pub flags: u8,
    /// Receptacle types it may be put in as a task target.
    pub targets: &'static [RecepType],
}

impl ObjInfo {
    pub fn prior(&self, r: RecepType) -> u16 {
        self.priors.iter().find(|p| p.0 == r).map_or(0, |p| p.1)
    }
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

const FOOD: &[RecepType] = {
    use RecepType::*;
    &[
        Countertop,
        Diningtable,
        Fridge,
        Garbagecan,
        Microwave,
        Sinkbasin,
    ]
};
const UTENSIL: &[RecepType] = {
    use RecepType::*;
    &[Countertop, Diningtable, Drawer, Sinkbasin]
};
const DISH: &[RecepType] = {
    use RecepType::*;
    &[
        Cabinet,
        Countertop,
        Diningtable,
        Fridge,
        Microwave,
        Shelf,
        Sinkbasin,
    ]
};
const SMALL: &[RecepType] = {
    use RecepType::*;
    &[Coffeetable, Drawer, Dresser, Safe, Shelf, Sidetable]
};
const DESKY: &[RecepType] = {
    use RecepType::*;
    &[Desk, Drawer, Dresser, Garbagecan, Safe, Shelf, Sidetable]
};
const DECOR: &[RecepType] = {
    use RecepType::*;
    &[
        Cabinet,
        Coffeetable,
        Diningtable,
        Dresser,
        Safe,
        Shelf,
        Sidetable,
    ]
};
const BATH: &[RecepType] = {
    use RecepType::*;
    &[Cabinet, Countertop, Drawer, Garbagecan, Shelf, Toilet]
};

/// The static facts of an object type.
#[rustfmt::skip]
pub(crate) fn info(o: ObjType) -> &'static ObjInfo {
    use ObjType as O;
    use RecepType::*;
    const PP: u8 = PICK | PLACE;
    match o {
        O::Apple => &ObjInfo { kinds: K, flags: PP | HEAT | COOL | CLEAN, targets: FOOD,
            priors: &[(Fridge, 40), (Countertop, 25), (Diningtable, 20), (Garbagecan, 7), (Sinkbasin, 4), (Microwave, 4)] },
        O::Bread => &ObjInfo { kinds: K, flags: PP | HEAT | COOL, targets: FOOD,
            priors: &[(Countertop, 45), (Diningtable, 30), (Fridge, 12), (Cabinet, 8), (Microwave, 5)] },
        O::Egg => &ObjInfo { kinds: K, flags: PP | HEAT | COOL | CLEAN, targets: FOOD,
            priors: &[(Fridge, 45), (Countertop, 20), (Diningtable, 15), (Garbagecan, 8), (Sinkbasin, 5), (Microwave, 4), (Stoveburner, 3)] },
        O::Lettuce => &ObjInfo { kinds: K, flags: PP | COOL | CLEAN, targets: FOOD,
            priors: &[(Fridge, 50), (Countertop, 25), (Diningtable, 20), (Sinkbasin, 5)] },
        O::Potato => &ObjInfo { kinds: K, flags: PP | HEAT | COOL | CLEAN, targets: FOOD,
            priors: &[(Fridge, 40), (Countertop, 25), (Diningtable, 15), (Garbagecan, 8), (Sinkbasin, 7), (Microwave, 5)] },
        O::Tomato => &ObjInfo { kinds: K, flags: PP | HEAT | COOL | CLEAN, targets: FOOD,
            priors: &[(Fridge, 40), (Countertop, 30), (Diningtable, 20), (Sinkbasin, 6), (Garbagecan, 4)] },
        O::Winebottle => &ObjInfo { kinds: K, flags: PP | COOL, targets: &[Cabinet, Countertop, Diningtable, Fridge, Garbagecan, Shelf],
            priors: &[(Fridge, 30), (Countertop, 30), (Diningtable, 20), (Cabinet, 12), (Shelf, 8)] },
        O::Butterknife => &ObjInfo { kinds: K, flags: PP | CLEAN, targets: UTENSIL,
            priors: &[(Drawer, 40), (Countertop, 35), (Diningtable, 15), (Sinkbasin, 10)] },
        O::Fork => &ObjInfo { kinds: K, flags: PP | CLEAN, targets: UTENSIL,
            priors: &[(Drawer, 45), (Countertop, 30), (Diningtable, 15), (Sinkbasin, 10)] },
        O::Knife => &ObjInfo { kinds: K, flags: PP | CLEAN, targets: UTENSIL,
            priors: &[(Drawer, 35), (Countertop, 35), (Diningtable, 18), (Sinkbasin, 12)] },
        O::Ladle => &ObjInfo { kinds: K, flags: PP | CLEAN, targets: UTENSIL,
            priors: &[(Drawer, 40), (Countertop, 30), (Diningtable, 15), (Sinkbasin, 15)] },
        O::Spatula => &ObjInfo { kinds: K, flags: PP | CLEAN, targets: UTENSIL,
            priors: &[(Drawer, 40), (Countertop, 35), (Diningtable, 15), (Sinkbasin, 10)] },
        O::Spoon => &ObjInfo { kinds: K, flags: PP | CLEAN, targets: UTENSIL,
            priors: &[(Drawer, 45), (Countertop, 30), (Diningtable, 12), (Sinkbasin, 13)] },
        O::Cup => &ObjInfo { kinds: K, flags: PP | HEAT | COOL | CLEAN, targets: &[Cabinet, Coffeemachine, Countertop, Diningtable, Fridge, Microwave, Shelf, Sinkbasin],
            priors: &[(Cabinet, 35), (Countertop, 25), (Fridge, 12), (Diningtable, 12), (Sinkbasin, 8), (Microwave, 8)] },
        O::Mug => &ObjInfo { kinds: K | L | B, flags: PP | HEAT | COOL | CLEAN | LOOK,
            targets: &[Cabinet, Coffeemachine, Countertop, Desk, Diningtable, Microwave, Shelf, Sinkbasin],
            priors: &[(Cabinet, 30), (Coffeemachine, 25), (Countertop, 20), (Desk, 20), (Shelf, 12), (Sinkbasin, 8), (Diningtable, 7), (Sidetable, 6), (Microwave, 5)] },
        O::Plate => &ObjInfo { kinds: K, flags: PP | HEAT | COOL | CLEAN, targets: DISH,
            priors: &[(Cabinet, 45), (Countertop, 22), (Diningtable, 20), (Sinkbasin, 8), (Fridge, 5)] },
        O::Bowl => &ObjInfo { kinds: K | L | B, flags: PP | COOL | CLEAN | LOOK, targets: DISH,
            priors: &[(Cabinet, 35), (Countertop, 20), (Shelf, 18), (Diningtable, 15), (Desk, 12), (Fridge, 10), (Sinkbasin, 8), (Sidetable, 6), (Coffeetable, 6)] },
        O::Pan => &ObjInfo { kinds: K, flags: PP | COOL | CLEAN, targets: &[Cabinet, Countertop, Diningtable, Sinkbasin, Stoveburner],
            priors: &[(Stoveburner, 50), (Cabinet, 22), (Countertop, 15), (Sinkbasin, 8), (Diningtable, 5)] },
        O::Pot => &ObjInfo { kinds: K, flags: PP | COOL | CLEAN, targets: &[Cabinet, Countertop, Diningtable, Shelf, Stoveburner],
            priors: &[(Stoveburner, 50), (Cabinet, 22), (Countertop, 15), (Sinkbasin, 8), (Shelf, 5)] },
        O::Kettle => &ObjInfo { kinds: K, flags: PP | CLEAN, targets: &[Cabinet, Countertop, Diningtable, Shelf, Stoveburner],
            priors: &[(Stoveburner, 45), (Countertop, 25), (Cabinet, 20), (Shelf, 10)] },
        O::Saltshaker => &ObjInfo { kinds: K, flags: PP, targets: &[Cabinet, Countertop, Diningtable, Drawer, Shelf],
            priors: &[(Countertop, 35), (Cabinet, 25), (Diningtable, 20), (Shelf, 15), (Drawer, 5)] },
        O::Peppershaker => &ObjInfo { kinds: K, flags: PP, targets: &[Cabinet, Countertop, Diningtable, Drawer, Shelf],
            priors: &[(Countertop, 35), (Cabinet, 25), (Diningtable, 20), (Shelf, 15), (Drawer, 5)] },
        O::Papertowelroll => &ObjInfo { kinds: K, flags: PICK, targets: &[],
            priors: &[(Countertop, 45), (Diningtable, 35), (Cabinet, 10), (Shelf, 10)] },
        O::Dishsponge => &ObjInfo { kinds: K | T, flags: PP | CLEAN, targets: &[Cabinet, Countertop, Drawer, Garbagecan, Sinkbasin],
            priors: &[(Sinkbasin, 35), (Countertop, 30), (Cabinet, 15), (Drawer, 10), (Bathtubbasin, 10)] },
        O::Soapbottle => &ObjInfo { kinds: K | T, flags: PP, targets: BATH,
            priors: &[(Countertop, 35), (Cabinet, 25), (Sinkbasin, 15), (Toilet, 15), (Shelf, 10)] },
        O::Alarmclock => &ObjInfo { kinds: L | B, flags: PP | LOOK, targets: &[Desk, Dresser, Shelf, Sidetable],
            priors: &[(Desk, 35), (Sidetable, 30), (Dresser, 20), (Shelf, 15)] },
        O::Book => &ObjInfo { kinds: L | B, flags: PP | LOOK, targets: &[Bed, Coffeetable, Desk, Drawer, Shelf, Sidetable, Sofa],
            priors: &[(Bed, 30), (Desk, 25), (Shelf, 15), (Sidetable, 15), (Coffeetable, 10), (Sofa, 5)] },
        O::Box => &ObjInfo { kinds: L | B, flags: PP | LOOK, targets: &[Coffeetable, Dresser, Shelf, Sidetable, Sofa],
            priors: &[(Shelf, 30), (Coffeetable, 25), (Sidetable, 15), (Dresser, 15), (Diningtable, 10), (Cabinet, 5)] },
        O::Cd => &ObjInfo { kinds: L | B, flags: PP | LOOK, targets: DESKY,
            priors: &[(Drawer, 30), (Desk, 25), (Shelf, 20), (Sidetable, 15), (Safe, 5), (Garbagecan, 5)] },
        O::Cellphone => &ObjInfo { kinds: L | B, flags: PP | LOOK, targets: &[Armchair, Bed, Desk, Drawer, Dresser, Sidetable, Sofa],
            priors: &[(Bed, 35), (Desk, 20), (Sidetable, 20), (Dresser, 15), (Sofa, 5), (Armchair, 5)] },
        O::Creditcard => &ObjInfo { kinds: L | B, flags: PP | LOOK, targets: &[Armchair, Coffeetable, Desk, Drawer, Dresser, Safe, Shelf, Sidetable],
            priors: &[(Desk, 20), (Sidetable, 20), (Coffeetable, 15), (Dresser, 15), (Drawer, 15), (Armchair, 10), (Sofa, 5)] },
        O::Keychain => &ObjInfo { kinds: L | B, flags: PP | LOOK, targets: &[Armchair, Coffeetable, Drawer, Dresser, Safe, Shelf, Sidetable],
            priors: &[(Sidetable, 25), (Dresser, 25), (Drawer, 20), (Coffeetable, 15), (Shelf, 10), (Safe, 5)] },
        O::Laptop => &ObjInfo { kinds: L | B, flags: PP | LOOK, targets: &[Armchair, Bed, Coffeetable, Desk, Diningtable, Sofa],
            priors: &[(Bed, 40), (Desk, 35), (Sofa, 15), (Coffeetable, 10)] },
        O::Newspaper => &ObjInfo { kinds: L | B, flags: PP | LOOK, targets: &[Armchair, Coffeetable, Diningtable, Garbagecan, Sidetable, Sofa],
            priors: &[(Sofa, 30), (Coffeetable, 30), (Armchair, 20), (Sidetable, 10), (Diningtable, 10)] },
        O::Pen => &ObjInfo { kinds: L | B, flags: PP | LOOK, targets: DESKY,
            priors: &[(Desk, 35), (Drawer, 25), (Sidetable, 20), (Shelf, 15), (Dresser, 5)] },
        O::Pencil => &ObjInfo { kinds: L | B, flags: PP | LOOK, targets: DESKY,
            priors: &[(Desk, 35), (Drawer, 25), (Sidetable, 20), (Shelf, 15), (Dresser, 5)] },
        O::Pillow => &ObjInfo { kinds: L | B, flags: PP | LOOK, targets: &[Armchair, Bed, Ottoman, Sofa],
            priors: &[(Sofa, 45), (Bed, 35), (Armchair, 20)] },
        O::Remotecontrol => &ObjInfo { kinds: L | B, flags: PP | LOOK, targets: &[Armchair, Coffeetable, Dresser, Sidetable, Sofa],
            priors: &[(Sofa, 30), (Coffeetable, 30), (Armchair, 20), (Sidetable, 10), (Tvstand, 10)] },
        O::Statue => &ObjInfo { kinds: L | B, flags: PP | LOOK, targets: DECOR,
            priors: &[(Shelf, 40), (Coffeetable, 25), (Sidetable, 15), (Dresser, 10), (Diningtable, 10)] },
        O::Vase => &ObjInfo { kinds: L | B, flags: PP | LOOK, targets: DECOR,
            priors: &[(Shelf, 40), (Coffeetable, 20), (Sidetable, 15), (Dresser, 10), (Diningtable, 10), (Cabinet, 5)] },
        O::Watch => &ObjInfo { kinds: L | B, flags: PP | LOOK, targets: SMALL,
            priors: &[(Sidetable, 30), (Dresser, 25), (Coffeetable, 15), (Drawer, 10), (Safe, 10), (Shelf, 10)] },
        O::Desklamp => &ObjInfo { kinds: L | B, flags: 0, targets: &[],
            priors: &[(Sidetable, 45), (Desk, 35), (Dresser, 20)] },
        O::Houseplant => &ObjInfo { kinds: L | B, flags: 0, targets: &[],
            priors: &[(Coffeetable, 30), (Sidetable, 25), (Shelf, 20), (Diningtable, 15), (Dresser, 10)] },
        O::Tissuebox => &ObjInfo { kinds: L | B | T, flags: PP, targets: &[Coffeetable, Countertop, Dresser, Shelf, Sidetable, Toilet],
            priors: &[(Sidetable, 30), (Coffeetable, 20), (Dresser, 20), (Shelf, 15), (Toilet, 15), (Countertop, 10)] },
        O::Candle => &ObjInfo { kinds: T, flags: PP, targets: BATH,
            priors: &[(Countertop, 35), (Toilet, 25), (Cabinet, 20), (Shelf, 20), (Bathtubbasin, 5)] },
        O::Cloth => &ObjInfo { kinds: T, flags: PP | CLEAN, targets: &[Bathtubbasin, Cabinet, Countertop, Drawer, Garbagecan, Sinkbasin, Toilet],
            priors: &[(Bathtubbasin, 25), (Countertop, 25), (Cabinet, 20), (Sinkbasin, 15), (Drawer, 10), (Toilet, 5)] },
        O::Handtowel => &ObjInfo { kinds: T, flags: PICK, targets: &[],
            priors: &[(Handtowelholder, 70), (Countertop, 20), (Cabinet, 10)] },
        O::Soapbar => &ObjInfo { kinds: T, flags: PP | CLEAN, targets: &[Bathtubbasin, Cabinet, Countertop, Drawer, Garbagecan, Sinkbasin, Toilet],
            priors: &[(Bathtubbasin, 25), (Sinkbasin, 20), (Countertop, 20), (Toilet, 20), (Cabinet, 10), (Garbagecan, 5)] },
        O::Spraybottle => &ObjInfo { kinds: T, flags: PP, targets: &[Cabinet, Countertop, Drawer, Garbagecan, Toilet],
            priors: &[(Toilet, 30), (Cabinet, 30), (Countertop, 25), (Garbagecan, 10), (Drawer, 5)] },
        O::Toiletpaper => &ObjInfo { kinds: T, flags: PP, targets: &[Cabinet, Countertop, Drawer, Garbagecan, Toilet, Toiletpaperhanger],
            priors: &[(Toiletpaperhanger, 45), (Toilet, 20), (Cabinet, 20), (Countertop, 10), (Drawer, 5)] },
        O::Towel => &ObjInfo { kinds: T, flags: PICK, targets: &[],
            priors: &[(Towelholder, 80), (Bathtubbasin, 10), (Countertop, 10)] },
    }
}

/// A room layout template: which receptacle types, how many of each.
pub(crate) struct Template {
    pub id: &'static str,
    pub kind: RoomKind,
    /// Held out: used only by the `unseen` split.
    pub heldout: bool,
    pub recs: &'static [(RecepType, u8, u8)],
}

macro_rules! tpl {
    ($id:literal, $kind:ident, $held:literal, [$(($r:ident, $lo:literal, $hi:literal)),* $(,)?]) => {
        Template { id: $id, kind: RoomKind::$kind, heldout: $held, recs: &[$((RecepType::$r, $lo, $hi)),*] }
    };
}

/// The layout templates; the `heldout` ones appear only in `unseen`.
#[rustfmt::skip]
pub(crate) static TEMPLATES: &[Template] = &[
    tpl!("kitchen-galley", Kitchen, false, [(Cabinet, 8, 13), (Coffeemachine, 1, 1), (Countertop, 1, 2), (Drawer, 3, 6), (Fridge, 1, 1), (Garbagecan, 1, 1), (Microwave, 1, 1), (Shelf, 0, 3), (Sinkbasin, 1, 1), (Stoveburner, 4, 4), (Toaster, 1, 1)]),
    tpl!("kitchen-dining", Kitchen, false, [(Cabinet, 4, 8), (Coffeemachine, 1, 1), (Countertop, 2, 3), (Diningtable, 1, 1), (Drawer, 2, 5), (Fridge, 1, 1), (Garbagecan, 1, 1), (Microwave, 1, 1), (Sinkbasin, 1, 1), (Stoveburner, 2, 4), (Toaster, 1, 1)]),
    tpl!("kitchen-island", Kitchen, false, [(Cabinet, 6, 10), (Coffeemachine, 1, 1), (Countertop, 3, 3), (Diningtable, 0, 1), (Drawer, 4, 9), (Fridge, 1, 1), (Garbagecan, 1, 1), (Microwave, 1, 1), (Shelf, 1, 3), (Sinkbasin, 1, 1), (Stoveburner, 4, 4), (Toaster, 1, 1)]),
    tpl!("kitchen-pantry", Kitchen, false, [(Cabinet, 10, 16), (Coffeemachine, 1, 1), (Countertop, 1, 2), (Diningtable, 1, 1), (Drawer, 1, 3), (Fridge, 1, 1), (Garbagecan, 1, 1), (Microwave, 1, 1), (Sinkbasin, 1, 1), (Stoveburner, 2, 4), (Toaster, 1, 1)]),
    tpl!("kitchen-small", Kitchen, false, [(Cabinet, 3, 6), (Coffeemachine, 1, 1), (Countertop, 1, 1), (Diningtable, 1, 1), (Drawer, 1, 3), (Fridge, 1, 1), (Garbagecan, 1, 1), (Microwave, 1, 1), (Shelf, 1, 3), (Sidetable, 0, 1), (Sinkbasin, 1, 1), (Stoveburner, 2, 4), (Toaster, 1, 1)]),
    tpl!("kitchen-cart", Kitchen, true, [(Cabinet, 5, 9), (Cart, 1, 1), (Coffeemachine, 1, 1), (Countertop, 2, 2), (Diningtable, 1, 1), (Drawer, 3, 6), (Fridge, 1, 1), (Garbagecan, 1, 1), (Microwave, 1, 1), (Shelf, 1, 2), (Sidetable, 1, 1), (Sinkbasin, 1, 1), (Stoveburner, 4, 4), (Toaster, 1, 1)]),
    tpl!("kitchen-large", Kitchen, true, [(Cabinet, 12, 18), (Coffeemachine, 1, 1), (Countertop, 2, 3), (Drawer, 6, 10), (Fridge, 1, 1), (Garbagecan, 1, 1), (Microwave, 1, 1), (Sinkbasin, 1, 2), (Stoveburner, 4, 6), (Toaster, 1, 1)]),
    tpl!("livingroom-lounge", Livingroom, false, [(Armchair, 1, 2), (Cabinet, 0, 2), (Coffeetable, 1, 1), (Drawer, 2, 4), (Garbagecan, 1, 1), (Shelf, 4, 8), (Sidetable, 1, 2), (Sofa, 1, 1), (Tvstand, 0, 1)]),
    tpl!("livingroom-dining", Livingroom, false, [(Armchair, 1, 1), (Cabinet, 2, 4), (Coffeetable, 1, 2), (Diningtable, 1, 1), (Drawer, 3, 6), (Dresser, 1, 1), (Garbagecan, 1, 1), (Safe, 0, 1), (Shelf, 2, 5), (Sidetable, 1, 3), (Sofa, 1, 1)]),
    tpl!("livingroom-study", Livingroom, false, [(Armchair, 0, 2), (Coffeetable, 1, 1), (Desk, 1, 1), (Drawer, 4, 8), (Garbagecan, 1, 1), (Ottoman, 0, 1), (Shelf, 5, 12), (Sidetable, 2, 2), (Sofa, 1, 2), (Tvstand, 1, 1)]),
    tpl!("livingroom-den", Livingroom, false, [(Armchair, 2, 2), (Cabinet, 4, 6), (Coffeetable, 1, 1), (Drawer, 2, 4), (Dresser, 1, 1), (Garbagecan, 1, 1), (Safe, 1, 1), (Shelf, 1, 3), (Sidetable, 1, 2), (Sofa, 1, 1), (Tvstand, 1, 1)]),
    tpl!("livingroom-open", Livingroom, false, [(Armchair, 1, 3), (Coffeetable, 1, 2), (Diningtable, 0, 1), (Drawer, 1, 3), (Garbagecan, 1, 1), (Ottoman, 1, 1), (Shelf, 3, 6), (Sidetable, 1, 3), (Sofa, 1, 2)]),
    tpl!("livingroom-library", Livingroom, true, [(Armchair, 1, 2), (Cabinet, 2, 3), (Coffeetable, 1, 1), (Desk, 1, 1), (Drawer, 5, 9), (Garbagecan, 1, 1), (Shelf, 8, 14), (Sidetable, 1, 2), (Sofa, 1, 1)]),
    tpl!("livingroom-studio", Livingroom, true, [(Armchair, 1, 1), (Bed, 1, 1), (Coffeetable, 1, 1), (Diningtable, 1, 1), (Drawer, 2, 4), (Dresser, 1, 1), (Garbagecan, 1, 1), (Safe, 1, 1), (Shelf, 2, 4), (Sidetable, 2, 3), (Sofa, 1, 1), (Tvstand, 1, 1)]),
    tpl!("bedroom-desk", Bedroom, false, [(Bed, 1, 1), (Desk, 1, 1), (Drawer, 3, 6), (Garbagecan, 1, 1), (Laundryhamper, 0, 1), (Shelf, 2, 6), (Sidetable, 1, 2)]),
    tpl!("bedroom-dresser", Bedroom, false, [(Armchair, 0, 1), (Bed, 1, 1), (Drawer, 6, 12), (Dresser, 1, 1), (Garbagecan, 1, 1), (Safe, 0, 1), (Shelf, 1, 3), (Sidetable, 2, 2)]),
    tpl!("bedroom-master", Bedroom, false, [(Bed, 1, 1), (Desk, 1, 1), (Drawer, 4, 8), (Dresser, 1, 1), (Garbagecan, 1, 1), (Laundryhamper, 1, 1), (Shelf, 4, 10), (Sidetable, 1, 2)]),
    tpl!("bedroom-guest", Bedroom, false, [(Armchair, 1, 1), (Bed, 1, 1), (Cabinet, 2, 4), (Desk, 1, 1), (Drawer, 2, 5), (Garbagecan, 1, 1), (Safe, 1, 1), (Shelf, 2, 4), (Sidetable, 1, 1)]),
    tpl!("bedroom-kids", Bedroom, false, [(Bed, 1, 2), (Desk, 1, 1), (Drawer, 2, 4), (Dresser, 0, 1), (Garbagecan, 1, 1), (Shelf, 3, 6), (Sidetable, 1, 2)]),
    tpl!("bedroom-suite", Bedroom, true, [(Armchair, 1, 2), (Bed, 1, 1), (Cabinet, 1, 3), (Coffeetable, 1, 1), (Drawer, 4, 7), (Dresser, 1, 1), (Garbagecan, 1, 1), (Shelf, 2, 5), (Sidetable, 2, 2), (Sofa, 1, 1)]),
    tpl!("bedroom-office", Bedroom, true, [(Bed, 1, 1), (Desk, 1, 2), (Drawer, 6, 10), (Garbagecan, 1, 1), (Laundryhamper, 1, 1), (Safe, 1, 1), (Shelf, 6, 10), (Sidetable, 1, 1)]),
    tpl!("bathroom-tub", Bathroom, false, [(Bathtubbasin, 1, 1), (Cabinet, 4, 4), (Countertop, 1, 1), (Drawer, 0, 4), (Garbagecan, 1, 1), (Handtowelholder, 1, 1), (Sinkbasin, 1, 2), (Toilet, 1, 1), (Toiletpaperhanger, 1, 1), (Towelholder, 1, 1)]),
    tpl!("bathroom-shower", Bathroom, false, [(Cabinet, 2, 4), (Countertop, 1, 1), (Drawer, 2, 4), (Garbagecan, 1, 1), (Handtowelholder, 0, 2), (Shelf, 1, 3), (Sinkbasin, 1, 1), (Toilet, 1, 1), (Toiletpaperhanger, 1, 1), (Towelholder, 1, 2)]),
    tpl!("bathroom-double", Bathroom, false, [(Bathtubbasin, 0, 1), (Cabinet, 3, 6), (Countertop, 1, 1), (Drawer, 2, 6), (Garbagecan, 1, 1), (Handtowelholder, 1, 2), (Sinkbasin, 2, 2), (Toilet, 1, 1), (Toiletpaperhanger, 1, 1), (Towelholder, 1, 1)]),
    tpl!("bathroom-storage", Bathroom, false, [(Cabinet, 4, 8), (Countertop, 1, 1), (Drawer, 1, 3), (Dresser, 0, 1), (Garbagecan, 1, 1), (Shelf, 2, 4), (Sinkbasin, 1, 1), (Toilet, 1, 1), (Toiletpaperhanger, 1, 1), (Towelholder, 1, 1)]),
    tpl!("bathroom-half", Bathroom, false, [(Cabinet, 2, 3), (Countertop, 1, 1), (Garbagecan, 1, 1), (Handtowelholder, 1, 1), (Shelf, 0, 2), (Sinkbasin, 1, 1), (Toilet, 1, 1), (Toiletpaperhanger, 1, 1)]),
    tpl!("bathroom-spa", Bathroom, true, [(Bathtubbasin, 1, 1), (Cabinet, 3, 5), (Countertop, 1, 2), (Drawer, 3, 6), (Garbagecan, 1, 1), (Handtowelholder, 1, 1), (Shelf, 1, 3), (Sinkbasin, 2, 2), (Toilet, 1, 1), (Toiletpaperhanger, 1, 1), (Towelholder, 1, 2)]),
    tpl!("bathroom-laundry", Bathroom, true, [(Cabinet, 4, 6), (Countertop, 1, 1), (Drawer, 2, 4), (Garbagecan, 1, 1), (Laundryhamper, 1, 1), (Shelf, 2, 4), (Sinkbasin, 1, 1), (Toilet, 1, 1), (Toiletpaperhanger, 1, 1), (Towelholder, 1, 1)]),
];
