"""Hazards named in a report's text: a small multilingual lexicon with negation handling.

The planner's perception fills the state (people, obstacle distance); a report can name a
hazard the state does not show (a person on the floor, goods fallen across the lane, a spill,
smoke, a door closing, a vehicle reversing, a stalled robot, a radio order to hold). The safety
layer uses ``scan`` so that such a report can only make a decision more cautious: it never
makes one less cautious, whatever the text says.

Vocabulary is generic safety vocabulary grouped by hazard class, in English, German, Spanish,
French and Chinese. A term does not count when a negation comes just before it in the same
clause ("no smoke", "kein Hindernis", "没有障碍物") or a conditional does ("in case of fire"),
when it is part of the name of a thing that is no hazard ("fire extinguisher", "spill kit",
"smoke detector", "evacuation route"), or when the clause says the hazard is over
("the spill was cleaned up"), unless the clause also tells the reader to disregard something
("ignore the smoke") — an instruction to look away is not evidence that the way is clear.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

HALT = "halt"        # stop or wait (reroute allowed)
CAUTION = "caution"  # at most slow_down

_W = r"(?<![\w])"     # word start for Latin scripts (\b is not enough next to accents)
_E = r"(?![\w])"


# goods that can fall, and what falling goods do (composed: a thing and a verb in one clause)
_GOODS = (r"(?:pallets?|box(?:es)?|cartons?|crates?|totes?|bags?|sacks?|loads?|stacks?|shel(?:f|ves|ving)|racks?|"
          r"racking|beams?|uprights?|(?:roll )?cages?|goods|stock|items?|parcels?|packages?|tins?|bottles?|"
          r"drums?|barrels?|kegs?|bundles?|cases|layers?|merchandise|products?)")
_FALLING = (r"(?:fell|falls?|falling|fallen|slid|slides?|sliding|slipped|slipping|tumbled?|tumbling|toppled?|"
            r"toppling|dropped(?! off)|dropping(?! off)|came down|coming down|gave way|giving way|collaps\w+|burst|"
            r"tipped|tipping|crashed|caved in|buckled?|buckling|spilled|spilt|came off|coming off|rolled off|"
            r"rolling (?:around|about|across|loose|down))")
# goods or racking that may come down: a load leaning out, a bent upright
_UNSTABLE = (r"(?:leaning|leans|overhanging|overhangs|(?:hanging|hangs) (?:out|over|off)|sticking out (?:into|over|across)|"
             r"protruding (?:into|over)|teetering|wobbl\w*|unstable|unsecured|about to (?:fall|topple|tip|drop|"
             r"come down|give way|collapse))")
_STRUCTURE = r"(?:racks?|racking|uprights?|beams?|shel(?:f|ves|ving))"
_DAMAGED = r"(?:bent|buckled|damaged|cracked|twisted|bowed|sagging|dented)"
# where a thing is in the robot's way
_IN_THE_WAY = (r"(?:ahead|in front|right in front|before me|in (?:my|the) (?:lane|aisle|path|way|route)|"
               r"of the (?:lane|aisle|path))")
# liquids, and what a liquid on the floor does
_LIQUID = (r"(?:water|liquid|fluids?|paint|glue|chemicals?|cleaner|detergent|bleach|milk|juice|syrup|beer|"
           r"wine|soda|honey|sauce|resin|solvent|ink)")
_FLOWING = (r"(?:everywhere|all over|on the floor|across the (?:floor|aisle|lane|path|way)|pouring|running (?:across|"
            r"down|over|onto|along)|spreading|dripping|pooling|gushing|seeping|flowing|splashed|covering)")
# "not moving" says a person is down; said of a machine it is no hazard ("a robot at its
# charger, not moving"): it counts unless its sentence names a machine and no person
_STILL_PERSON = r"not moving"
_MACHINE = re.compile(_W + r"(?:robots?|amrs?|agvs?|forklifts?|trucks?|vehicles?|tuggers?|carts?|trolleys?|lifts?|"
                      r"elevators?|conveyors?|belts?|machines?|doors?|shutters?|cranes?|drones?)" + _E)
_PERSON = re.compile(_W + r"(?:person|persons|people|someone|somebody|anyone|he|she|him|her|man|woman|men|women|"
                     r"worker|workers|colleague|colleagues|picker|pickers|operator|operators|driver|drivers|"
                     r"guy|kid|kids|child|children|visitor|visitors|packer|packers|body)" + _E)
# "evacuation route", "evacuation drill": things named after a hazard, not the hazard
_NOT_A_HAZARD_NOUN = r"(?! (?:drills?|routes?|plans?|maps?|signs?|exercises?|points?|procedures?))"


def _words(*alts: str) -> str:
    return _W + "(?:" + "|".join(alts) + ")" + _E


# (hazard class, severity, pattern); patterns run on lower-cased, NFKC-normalised text.
_LEXICON: tuple[tuple[str, str, str], ...] = (
    # a person down or hurt
    ("person_down", HALT, _words(
        r"(?:lying|laying|lies|lay)\b.{0,30}\b(?:floor|ground|motionless|still|unconscious|face ?down)",
        "collapsed", "fainted", "passed out", "unconscious", "unresponsive", "motionless", "slumped",
        "injured", "bleeding", "knocked down", "fell down", "has fallen", "man down", "person down",
        "worker down", r"tripped (?:and fell|over)", "hurt", _STILL_PERSON, "not responding",
        "keeled over", "sprawled", r"(?:flat|stretched) (?:out )?on (?:the|his|her|their) (?:floor|ground|concrete|back|face)",
        "trapped", "pinned", "needs help", "medical emergency",
        "first aid", "ambulance", r"on the (?:floor|ground) (?:and|not) (?:moving|breathing|responding)",
        r"(?:can't|cannot|can not|unable to|couldn't) (?:get up|stand up|stand|move)",
        r"(?:holding|clutching|grabbing) (?:his|her|their|a|the) (?:leg|arm|head|back|knee|ankle|foot|hand|side|chest|wrist)",
        "groaning", "moaning", "in pain", r"(?:took|had) a (?:bad )?fall", r"slipped (?:and fell|over)",
        r"(?:sitting|kneeling|curled up|rolling|writhing) on the (?:floor|ground)",
        # de
        r"(?:liegt|liegen)\b.{0,30}\b(?:boden|reglos|bewusstlos)", "bewusstlos", "ohnmächtig",
        "zusammengebrochen", "verletzt", "gestürzt", "regungslos", "reglos", "verunglückt",
        "eingeklemmt", "notfall",
        # es
        r"tirad[oa]s?", r"tendid[oa]s?", "inconsciente", r"desmayad[oa]s?", r"herid[oa]s?", "inmóvil",
        r"se (?:ha )?(?:caído|desmayado)", r"atrapad[oa]s?", r"aplastad[oa]s?", "emergencia",
        # fr
        r"allongée?s?", r"étendue?s?", r"inconsciente?s?", r"évanouie?s?", r"blessée?s?", "immobile",
        "par terre", r"s'est effondrée?", "urgence", "au secours", r"écrasée?s?",
    )),
    ("person_down", HALT, r"(?:躺在地|倒在地|倒地|昏倒|晕倒|昏迷|受伤|摔倒|不省人事|一动不动|动不了|救命|急救|被压|压住|被困)"),
    # goods fallen, scattered, collapsed
    ("fallen_goods", HALT, _words(
        r"fell (?:off|over|down|from|onto|into|across|out|on)", "fallen", "falling", "toppled", "toppling", r"tipped (?:over|off)", "knocked over",
        "collapsed", "collapsing", "scattered", "strewn", "spilled out", "slid off", "caved in",
        "debris", "broken glass", "shattered", "overturned", "upended", "rubble", r"crashed (?:down|off)",
        r"(?:load|pallet|stack|shelf|shelving|rack|racking) (?:fell|came down|gave way|slid|shifted)", r"dropped\b.{0,20}\b(?:floor|ground|lane|aisle|path|way)",
        r"about to (?:fall|topple|tip over|come down|give way|collapse)",
        _GOODS + r"\b.{0,40}\b" + _FALLING, _GOODS + r"\b.{0,40}\b" + _UNSTABLE,
        _GOODS + r"\b.{0,40}\bon the (?:floor|ground)\b.{0,6}" + _IN_THE_WAY,
        _GOODS + r"\b.{0,40}\b(?:all over|across) the (?:floor|ground)",
        _STRUCTURE + r"\b.{0,20}\b(?:is |are |looks |was )?" + _DAMAGED, _DAMAGED + r" (?:\w+ )?" + _STRUCTURE,
        # de
        "gefallen", r"umgefallen\w*", r"heruntergefallen\w*", "runtergefallen", "herabgefallen", r"umgestürzt\w*",
        r"umgekippt\w*", r"eingestürzt\w*", r"verstreut\w*", "trümmer", "scherben", "umgestoßen", r"(?:herunter|ab)?gerutscht",
        r"droht (?:umzukippen|herunterzufallen|zu fallen|einzustürzen)", "wackelt", "hängt über", r"ragt\b.{0,20}\bin den gang",
        # es
        r"caíd[oa]s?", "cayeron", "cayó", r"volcad[oa]s?", r"derrumbad[oa]s?", r"esparcid[oa]s?",
        r"desparramad[oa]s?", "escombros", r"vidrios? rotos?", "derrumbe", r"se volcó", "volcó",
        r"se (?:deslizaron|deslizó|resbalaron|resbaló)", r"a punto de (?:caer|caerse|volcar)", "se tambalea",
        r"sobresale\b.{0,20}\bpasillo", r"inclinad[oa]s? (?:sobre|hacia) el pasillo",
        # fr
        r"tombée?s?", r"effondrée?s?", r"éparpillée?s?", r"(?:ont|a) glissé", r"dispersée?s?", "débris", r"éboulée?s?",
        r"sur le point de (?:tomber|basculer|s'effondrer)", r"penchée?s? (?:sur|vers|au-dessus de) l'allée", r"dépasse\b.{0,20}\bdans l'allée",
    )),
    ("fallen_goods", HALT, r"(?:掉落|掉下|掉了|倒塌|坍塌|散落|翻倒|倒下|砸落|滑落|碎玻璃|翻了|倒了|摇摇欲坠|快要倒|要倒了|倾斜)"),
    # liquids on the floor
    ("spill", HALT, _words(
        r"spill(?! (?:kits?|trays?|pallets?|response|drills?))", "spills", "spilled", "spilt", "spillage", "leak", "leaks", "leaking", "leaked",
        "puddle", "puddles", "pool of", "pooling", "oil", "grease", "fuel", "diesel",
        "coolant", "slick", r"hydraulic (?:fluid|oil)", r"(?:battery )?acid", "sludge",
        r"liquid (?:on|across|all over)", _LIQUID + r"\b.{0,30}\b" + _FLOWING,
        # de
        "ausgelaufen", "ausgelaufenes", "verschüttet", "leck", "leckt", "öl", "ölfleck", "ölspur",
        "pfütze", "lache", "kraftstoff", "hydrauliköl", "kühlmittel",
        # es
        "derrame", r"derramad[oa]s?", "derramó", "fuga", "gotea", "goteando", "charco", "aceite",
        "combustible", "gasoil", "refrigerante", "ácido",
        # fr
        "fuite", "flaque", "huile", "carburant", "gazole", "acide", r"déversée?s?", r"répandue?s?", r"renversée?s?",
    )),
    ("spill", HALT, r"(?:泄漏|漏油|漏液|油污|油渍|机油|液压油|冷却液|溢出|洒了|洒落|洒在|一滩|酸液)"),
    ("wet_floor", CAUTION, _words(
        "wet", "damp", "slippery", "moist", "freshly mopped",
        "nass", "nasse", "nassen", "feucht", "rutschig",
        r"mojad[oa]s?", r"húmed[oa]s?", r"resbaladiz[oa]s?", "resbaloso",
        r"mouillée?s?", "humide", r"glissante?s?",
    )),
    ("wet_floor", CAUTION, r"(?:积水|湿滑|地面湿|地滑|很滑|漏水)"),
    # fire, smoke, alarms
    ("fire_smoke", HALT, _words(
        r"smoke(?! (?:detectors?|sensors?|doors?|curtains?|alarm tests?|tests?))", "smoking", "smoky", r"smould\w*", r"smold\w*", "burning", "burnt", "flames?",
        "on fire", r"fire(?! (?:exits?|doors?|extinguishers?|drills?|escapes?|lanes?|routes?|marshals?|"
                   r"shutters?|safety|hose|hydrant|blanket|alarms?|wardens?))",  # a sounding alarm: below
        "sparks?", "sparking", "explosion", "fumes", r"red[- ]hot", r"glowing (?:red|orange|hot)",
        r"(?:swelling|swollen|bulging|hissing|melting|melted) (?:battery|batteries|pack|cell|cells|cable|charger)",
        r"(?:battery|batteries|pack|cell|cells|cable|charger)\b.{0,20}\b(?:swelling|swollen|bulging|hissing|melting|melted)", r"evacuat\w*" + _NOT_A_HAZARD_NOUN,
        "overheating", r"scorch\w*",
        r"(?:alarm|siren|detector)s?\b.{0,20}\b(?:sounding|going off|went off|goes off|ringing|blaring|wailing|triggered)",
        r"sprinklers?\b.{0,20}\b(?:went off|going off|goes off|gone off|came on|coming on|activated|triggered|spraying)",
        # de
        "rauch", "qualm", "brandgeruch", "brennt", r"feuer(?!(?:löscher|tür|schutz|wehr))", "flammen", "funken",
        "funkenflug", "verbrannt", "schwelbrand", "feueralarm", "brandalarm", r"evakuier\w*", r"überhitz\w*",
        # es
        "humo", "fuego", "incendio", "llamas?", "chispas?", "quemado", "ardiendo", "arde",
        r"alarma de incendios?", r"evacua\w*" + _NOT_A_HAZARD_NOUN, r"sobrecalentad[oa]s?",
        # fr
        "fumée", r"(?<!coupe-)feu(?! (?:vert|rouge|orange|de signalisation))", "incendie", "flammes?",
        "étincelles?", "brûle", "odeur de brûlé", "alarme incendie", r"évacu\w*", "surchauffe",
    )),
    ("fire_smoke", HALT, r"(?:冒烟|烟雾|浓烟|有烟|起火|着火|失火|火灾|火焰|火苗|火花|明火|烧焦|焦味|燃烧|爆炸|警报|疏散|过热)"),
    # doors, shutters, gates, barriers closing
    ("closing_barrier", HALT, _words(
        r"(?:doors?|shutters?|gates?|barriers?|boom)\b.{0,40}\b(?:closing|lowering|descending|coming down|"
        r"shutting|starting to close|started to close|begun to close|about to close|rolling down|"
        r"swinging shut|sliding shut|swinging closed|sliding closed|dropping|going down|moving down|"
        r"coming closed)",
        r"(?:closing|lowering|descending)\b.{0,20}\b(?:doors?|shutters?|gates?|barriers?)",
        # de
        r"schließt sich", r"schliesst sich", r"senkt sich", r"fährt (?:herunter|runter|zu)", r"geht zu",
        r"kommt (?:herunter|runter)", r"rollt (?:herunter|runter)",
        # es
        "cerrándose", r"se (?:está )?cerrando", "se cierra", r"(?:está )?bajando", "desciende", "descendiendo",
        # fr
        "se ferme", "se referme", r"en train de se fermer", "se baisse", "descend", "s'abaisse",
    )),
    ("closing_barrier", HALT, r"(?:正在关|在关闭|正在下降|在下降|正在落下|落下来|降下来|要关了|自动关闭|关门了|快关了)"),
    # something moving toward the robot: reversing vehicles, head-on traffic
    ("approaching", HALT, _words(
        "reversing", r"backing (?:up|out|toward|towards|into|in)", "backs up", "in reverse",
        r"reverse (?:beeper|beeping|alarm|lights?|gear)",
        r"(?:toward|towards|straight at|right at|heading at|coming at|charging at) (?:me|the robot|us|my)",
        r"head[- ]on", "oncoming", "closing in", "closing on me", "collision course", "runaway",
        "out of control", r"not (?:stopping|yielding|slowing)",
        r"(?<!i'm )(?<!i am )(?<!we're )(?<!we are )approaching", r"no sign of (?:stopping|yielding|slowing)",
        r"(?:won't|doesn't|does not|will not) (?:stop|yield|slow)",
        r"(?:approaching|coming) (?:me|us|the robot|fast|quickly)", "bearing down", r"heading (?:for|straight for) me",
        r"speeding (?:toward|towards|down|through)", "coming through", "make way",
        r"(?:get|move|stay) out of (?:the|his|her|their|its) way",
        r"(?:heading|coming|driving|moving|rolling|running|rushing|racing) (?:right |straight )?(?:my way|at me|for me)",
        r"(?:rolling|driving|moving|coming|running|sliding|drifting) (?:toward|towards) (?:me|the robot|us)",
        # de
        "rückwärts", "setzt zurück", "stößt zurück", r"(?:kommt|fährt|läuft|rollt) (?:direkt )?auf mich zu",
        "auf mich zu", "gegenverkehr", "frontal", "kollisionskurs",
        # es
        "marcha atrás", "retrocede", "retrocediendo", "reversa", "hacia mí", "contra mí", "de frente",
        "se acerca", "se me acerca", "acercándose", r"viene (?:hacia|directo)",
        # fr
        "recule", "reculant", "marche arrière", "vers moi", "sur moi", "droit sur", "de face",
        "en sens inverse", "fonce", "s'approche", r"vient (?:vers|sur) moi",
    )),
    ("approaching", HALT, r"(?:倒车|后退|倒退|朝我|冲向我|冲我|向我(?:驶|开|冲|走|跑|靠)|迎面|逆行|对向|逼近|靠近我|冲过来|开过来|朝这边)"),
    # the way blocked, closed, a stalled vehicle or robot
    ("blocked", HALT, _words(
        "blocked", "blocking", "blocks", "obstructed", "obstructing", "obstruction", "obstacles?",
        "impassable", "jammed", "stuck", "stalled", "broken down", "broke down", "breakdown",
        r"(?:fault|error|warning) lights?", "out of service", "in the way",
        r"across (?:the|my|this|our|its) (?:aisle|lane|path|route|way|corridor|passage|road|width)",
        r"(?:aisle|lane|path|route|way|area|zone|section|corridor|passage|crossing|bay)\b.{0,25}\b"
        r"(?:closed|cordoned|taped off|roped off|fenced off|sealed off|shut)",
        r"(?:closed|cordoned|taped|roped|fenced|sealed) off", r"clos(?:e|es|ing) off", "no entry", "do not enter", "keep out",
        r"(?:keep|stay) (?:clear|away|back)(?! (?:of )?(?:the |my )?(?:robots?|me)\b)",
        r"in the middle of (?:the|my|this|our) (?:aisle|lane|path|route|way|corridor|passage|crossing)",
        r"(?:aisle|lane|path|route|corridor|passage)\b.{0,15}\bfull of",
        r"(?:stands?|standing|parked|left|sits|sitting|placed|dumped|abandoned)\b.{0,12}\b(?:in|on) "
        r"(?:the|my|this) (?:aisle|lane|path|route|way|corridor|passage)(?! (?:racks?|racking|shelves|shelving|bays?|locations?))",
        r"(?:sticks?|sticking|juts?|jutting|protrud\w*|extends?|extending|reach(?:es|ing)?) (?:out )?(?:into|across|over) "
        r"(?:the|my|this) (?:aisle|lane|path|route|way|corridor|passage)",
        r"(?:parked|lying|lies|left|stuck|standing|stands|sits|sitting|wedged|jammed|turned|skewed) "
        r"(?:sideways |crosswise |diagonally )?across(?! from)",
        "dangling", "low-hanging", r"at (?:bumper|sensor|lidar) height",
        r"(?:is|are) being (?:dismantled|installed|repaired|rebuilt|assembled|erected|welded|demolished|replaced|refitted)",
        r"work(?:ing)? at height",
        r"off[- ]limits", "work zone", r"(?:maintenance|repairs?|works?) in progress", "under maintenance",
        "deadlock", "deadlocked", r"e-?stopped",
        # de
        "blockiert", "versperrt", "gesperrt", "verstellt", "hindernis", "hindernisse", "steckt fest",
        "festgefahren", "liegengeblieben", "störung", "defekt", "im weg", r"quer (?:über|auf|im|in)",
        r"(?:liegt|liegen|steht|stehen)\b.{0,40}\bquer",
        "wartungsarbeiten", "nicht betreten",
        # es
        r"bloquead[oa]s?", "bloquea", r"obstruid[oa]s?", r"obstáculos?", r"atascad[oa]s?",
        r"averiad[oa]s?", r"en medio del (?:pasillo|paso|carril)", "impide el paso",
        r"(?:pasillo|paso|zona|área|carril|ruta)\b.{0,20}\bcerrad[oa]", "prohibido el paso", "no pase",
        "en mantenimiento",
        # fr
        r"bloquée?s?", "bloque", r"obstruée?s?", "obstacles?", r"coincée?s?", "en panne",
        r"immobilisée?s?", r"barrée?s?", r"encombrée?s?", "en travers",
        r"(?:allée|passage|zone|voie|couloir)\b.{0,20}\bfermée?", "accès interdit", "en maintenance",
    )),
    ("blocked", HALT, r"(?:堵住|堵塞|堵了|挡住|挡路|阻塞|障碍|卡住|卡在|故障|抛锚|横在|封闭|封锁|禁止通行|不能通行|无法通过|过不去|维修中|检修中|请勿进入)"),
    # an order to halt or hold (radio, operator)
    ("stop_order", HALT, _words(
        r"(?:all|every) (?:units?|robots?|vehicles?|traffic|agvs?|amrs?|trucks?)\b.{0,30}\b"
        r"(?:stop|halt|hold|freeze|wait|stand by|stay)",
        r"hold (?:your |their )?position", "emergency stop", "e-stop", "estop",
        r"(?:stop|halt|freeze) (?:now|immediately|right now|where you are|at once)",
        r"do not (?:move|proceed|enter|go)", r"don't (?:move|proceed|enter|go)",
        r"stay (?:where you are|put|back|clear)", "stand still", "wait for clearance",
        r"(?:dispatch|dispatcher|supervisor|control|operator|radio|foreman|shift lead)\b.{0,40}\b"
        r"(?<!need to )(?<!not )(?<!n't )(?<!no )(?<!never )(?<!skip the )(?<!skip )(?:stop|halt|hold|wait|freeze|stand by)",
        # de
        "stopp", "anhalten", r"stehen ?bleiben", "position halten", r"nicht (?:weiterfahren|einfahren)",
        "notaus", "not-aus", "nothalt", r"alle\b.{0,20}\b(?:halten|stoppen|warten)", "sofort anhalten",
        r"(?:funk|leitstand|schichtleiter\w*|vorarbeiter)\b.{0,40}\b(?:halt|stopp|warten|anhalten)",
        # es
        r"¡\s*alto", "alto total", r"deténg[ae]n?se", "detente", "paren", "no avance", "no avancen",
        "no entrar", "no pasar", "quietos", "parada de emergencia", r"mantengan? (?:la )?posición",
        r"(?:radio|supervisor\w*|jef[ea]|control)\b.{0,40}\b(?:paren|esperen|alto|deténganse)",
        # fr
        "arrêtez", "arrête-toi", "arrêtez-vous", "halte", "ne bougez plus", "ne pas avancer",
        "n'avancez pas", "restez en position", "tenez la position", "arrêt d'urgence",
        "entrée interdite", "interdit d'entrer", "n'avancez plus",
        r"(?:radio|superviseur|chef|contrôle)\b.{0,40}\b(?:arrêtez|attendez|stop)",
    )),
    ("stop_order", HALT, r"(?:^\W*(?:stop|halt|freeze|wait|hold|stopp|alto|arrête|停)\W*$|停下|停车(?!场|位)|立即停|马上停|原地等待|原地待命|保持位置|不要动|别动|不要前进|禁止进入|全部停|紧急停止|急停|原地不动|请等待|所有.{0,6}(?:停|等待|待命))"),
    # a person in the way, named only in the text
    ("person_in_path", HALT, _words(
        r"(?:person|someone|somebody|people|workers?|pedestrians?|child|children|kids?|visitors?|"
        r"operators?|pickers?|colleagues?|man|woman|guy)\b.{0,40}\b(?:in front of me|in my (?:path|way|lane)|"
        r"right ahead|directly ahead|just ahead|in the way|stepped (?:out|into|in front)|"
        r"walked (?:out|into|in front)|ran (?:out|into|in front)|darted)",
        # a child on the warehouse floor, wherever it is
        r"(?:child|children|kids?|toddlers?)\b.{0,30}\b(?:running|playing|wander\w*|roaming|loose|lost|"
        r"unaccompanied|on the (?:floor|loose)|in the (?:aisles?|lanes?|hall|racks?|racking|warehouse))",
        r"(?:person|jemand|mitarbeiter\w*|kollegin|kollege|kind|fußgänger|leute|menschen)\b.{0,40}\b"
        r"(?:vor mir|im weg|direkt vor)",
        r"(?:persona|alguien|trabajador\w*|operari[oa]|niñ[oa]|gente|peatón)\b.{0,40}\b"
        r"(?:delante de mí|frente a mí|en mi camino)",
        r"(?:une personne|quelqu'un|ouvrier\w*|opérat\w+|enfant|piéton|collègue)\b.{0,40}\b"
        r"(?:devant moi|sur mon chemin)",
    )),
    ("person_in_path", HALT, r"(?:有人|一个人|工人|行人|小孩|孩子|同事|人员).{0,10}(?:在我前面|挡|站在路|在路中|面前)"),
)

_COMPILED = tuple((kind, sev, re.compile(pat)) for kind, sev, pat in _LEXICON)

_NEGATORS = frozenset("""
no not nobody none nothing never without zero free n't isn't aren't wasn't weren't don't doesn't
didn't hasn't haven't won't cannot can't nor neither
kein keine keinen keiner keinem keines nicht ohne niemand nichts weder
sin ningún ninguna ninguno nada nadie ni tampoco
pas aucun aucune sans rien jamais ni
""".split())
# procedure and sign wording: "in case of fire", "im Brandfall" is a word of its own
_HYPOTHETICAL = re.compile(r"(?:\bin (?:the )?case of|\bin the event of|\ben cas d'|\ben cas de|\ben caso de|"
                           r"\bim fall(?:e)? (?:von|eines|einer)|如果|万一)\s*(?:an? |the |un |une |la |le |el )?$")
_CJK_NEGATION = re.compile(r"(?:没有|没|无|不|未|别|并无)[^，。；！？,.;!?]{0,3}$")
# the hazard is over (anywhere in the clause)
_RESOLVED = (_words(
    # done, not under way ("is being repaired" is work in progress)
    r"(?<!being )(?:cleared|cleaned up|cleaned|mopped up|removed|fixed|repaired)", "gone", "has left", "have left",
    "already left", "moved away", "moved on",
    r"(?:has|have|had) (?:driven|pulled|rolled|backed) (?:off|away)", r"drove (?:off|away)", "no longer", "reopened",
    "resolved", "picked up", "put away", "tidied", "all clear",
    # taken out of the way: "the pallet that was blocking the lane has been moved to storage"
    # (not "moved into the lane": the place it went must not be the way)
    r"(?:been|was|were|got) (?:moved|taken|towed|hauled|carried|pushed|wheeled|driven) (?:away|aside|back|off|"
    r"out of the (?:way|lane|aisle)|to (?:storage|the side|one side|the wall|the back|(?:its|their|the) "
    r"(?:bays?|places?|spots?|racks?|stores?|storage|parking|charger|station)))",
    r"(?:taken|towed|hauled|carried|wheeled) away",
    "aufgeräumt", "entfernt", "beseitigt", "wieder frei", "behoben",
    r"limpiad[oa]", r"retirad[oa]", r"despejad[oa]", r"recogid[oa]", "ya no",
    r"nettoyée?s?", r"retirée?s?", r"dégagée?s?", r"ramassée?s?", "ne plus",
)) + r"|(?:已清理|已清除|清理干净|已经清理|已移走|已修复|已解除|已经离开|恢复通行)"
_RESOLVED_RE = re.compile(_RESOLVED)
# an instruction to look away is no evidence of a clear way
_DISREGARD = (_words(
    "ignore", "ignoring", "disregard", r"don't (?:worry|mind|care)", r"do not (?:worry|mind|care)",
    "never mind", "regardless", "despite", "pay no attention", "pretend",
    "ignorier\\w*", "trotz", "ignora\\w*", "ignore[rz]?", "malgré",
)) + r"|(?:忽略|无视|不要管|别管|不用管)"
_DISREGARD_RE = re.compile(_DISREGARD)
# a hazard placed in the past ("yesterday a box fell here") is over when a later clause says
# the way is clear now ("but today the aisle is empty"): both times named. Not a hazard said to
# go on ("since this morning", "still", "water is pouring", "there is glass").
_PAST = re.compile(_W + r"(?<!since )(?<!seit )(?<!desde )(?<!depuis )(?:yesterday|last (?:night|week|weekend|shift|month)|"
                   r"this morning|(?:an?|one|two|three|a few|several|\d+) (?:minutes?|hours?|days?|weeks?) ago|gestern|"
                   r"letzte woche|ayer|la semana pasada|la semaine dernière)" + _E + r"|(?:昨天|上周)")
_ONGOING = re.compile(_W + r"(?:still|again|keeps?|ongoing|continu\w*|(?:is|are|'s|'re) \w+ing|there (?:is|are|'s)|noch|"
                      r"immer noch|todavía|sigue|toujours|encore)" + _E + r"|(?:仍然|还在|依然)")
_CLEAR_NOW = re.compile(
    _W + r"(?:(?:aisle|lane|path|way|floor|route|corridor|area|hall|passage|everything|it)\b.{0,25}\b"
    r"(?:is|are|'s|looks?|stays?|now)\b.{0,20}\b(?:clear|empty|free|open|spotless|dry|clean|tidy|deserted)|all clear|"
    r"nothing (?:is )?in the way|(?:gang|weg|boden)\b.{0,20}\b(?:frei|leer|sauber)|(?:pasillo|camino|suelo)\b.{0,20}\b"
    r"(?:despejad[oa]|libre|vací[oa]|limpi[oa])|(?:allée|passage|sol|voie)\b.{0,20}\b(?:dégagée?|libre|vide|propre))" + _E +
    r"|(?:畅通|空无一人|已经干净|很干净)")
_NOW = re.compile(_W + r"(?:now|today|jetzt|heute|ahora|hoy|maintenant|aujourd'hui)" + _E + r"|(?:现在|今天)")
_CLAUSE = re.compile(r"[.;:!?\n。；：！？]+|,|，|、|\s[-–—]\s|\b(?:but|however|although|aber|pero|mais|sino)\b|但是|可是|不过|但")
_TOKEN = re.compile(r"[\w'’]+")


@dataclass(frozen=True)
class HazardMatch:
    """One hazard term found in a report."""

    kind: str
    severity: str
    text: str


# the robot's own battery signals are no hazard on the way ("low battery alarm going off",
# "battery warning light on"): left standing, a robot on a flat battery is stranded
_OWN_BATTERY_SIGNAL = re.compile(
    r"(?:(?:low|critical)[- ])?(?:battery|charge|charging|power)[- ](?:(?:low|level|warning)[- ])?"
    r"(?:alarms?|alerts?|warnings?(?: lights?)?|lights?|beeps?|beeping|signals?|indicators?)")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    text = _OWN_BATTERY_SIGNAL.sub("battery signal", text)
    return re.sub(r"\s+", " ", text)


def _negated(before: str) -> bool:
    """A negation among the last three words (or CJK characters) before a term, or a
    conditional that names no present hazard ("in case of fire, use exit B")."""
    if _CJK_NEGATION.search(before) or _HYPOTHETICAL.search(before):
        return True
    tokens = _TOKEN.findall(before)[-3:]
    return any(t in _NEGATORS or t.endswith("n't") or t.startswith("n'") for t in tokens)


_SENTENCE = re.compile(r"[.;!?\n。；！？]+")


def _clause_hazards(clause: str, sentence: str) -> list[HazardMatch]:
    disregard = bool(_DISREGARD_RE.search(clause))
    if _RESOLVED_RE.search(clause) and not disregard:
        return []
    found = []
    for kind, sev, rx in _COMPILED:
        for m in rx.finditer(clause):
            if not disregard and _negated(clause[:m.start()]):
                continue
            if m.group(0) == _STILL_PERSON and _MACHINE.search(sentence) and not _PERSON.search(sentence):
                continue
            found.append(HazardMatch(kind, sev, m.group(0)))
            break
    return found


def _clear_now(clause: str) -> bool:
    """The clause says the way is clear now (and negates nothing of it)."""
    return bool(_CLEAR_NOW.search(clause)) and bool(_NOW.search(clause)) and not any(
        t in _NEGATORS or t.endswith("n't") for t in _TOKEN.findall(clause))


def scan(text: str) -> list[HazardMatch]:
    """Hazard terms of ``text`` that are neither negated nor said to be over."""
    norm = normalise(text or "")
    clauses = [(c, sent) for sent in _SENTENCE.split(norm) for c in _CLAUSE.split(sent) if c and c.strip()]
    hits = [_clause_hazards(c, sent) for c, sent in clauses]
    disregard = bool(_DISREGARD_RE.search(norm))
    found: list[HazardMatch] = []
    for i, (clause, _) in enumerate(clauses):
        if hits[i] and not disregard and _PAST.search(clause) and not _ONGOING.search(clause) and any(
                not hits[j] and _clear_now(clauses[j][0]) for j in range(i + 1, len(clauses))):
            continue  # over: it happened before, and the report says the way is clear now
        found.extend(hits[i])
    return found


def severity(matches: list[HazardMatch]) -> str:
    """HALT when any match halts, CAUTION when any cautions, else ""."""
    if any(m.severity == HALT for m in matches):
        return HALT
    return CAUTION if matches else ""
