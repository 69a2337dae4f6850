"""The report-text hazard lexicon: recall on hazard classes in five languages, negations and
hazards said to be over, and no false alarm on ordinary clear-way reports (written for this
test, not taken from any corpus file)."""
import pytest

from quant_llm_node.reasoning.hazards import CAUTION, HALT, scan, severity

HAZARDS = {
    "person_down": ["A picker fainted next to the conveyor.", "Somebody is lying on the ground by rack C.",
                    "A colleague tripped and fell, she is not responding.",
                    "Ein Kollege ist gestürzt und bewusstlos.", "Un trabajador está tendido, inconsciente.",
                    "Une femme est allongée, inconsciente.", "有人晕倒在通道里。"],
    "fallen_goods": ["A stack of tins toppled into the lane.", "Debris from a broken pallet is all over.",
                     "The shelf gave way and cartons crashed down.", "Kisten sind umgefallen.",
                     "Se cayeron cajas del estante.", "Des colis sont tombés de l'étagère.", "货架上的箱子掉落了。"],
    "spill": ["Engine oil is leaking across the floor.", "There is a big puddle of coolant.",
              "Öl ist ausgelaufen.", "Hay una fuga de aceite.", "Une flaque d'huile devant moi.", "地上有一滩机油。"],
    "fire_smoke": ["Sparks are flying from the charger.", "I smell smoke near the compressor.",
                   "The fire alarm is sounding.", "Es brennt im Lager.", "Hay humo en el muelle.",
                   "Il y a des flammes.", "仓库里冒烟了。"],
    "closing_barrier": ["The high-speed door is closing on my path.", "The gate ahead started to close.",
                        "Das Rolltor schließt sich.", "La puerta se está cerrando.", "La porte se ferme.",
                        "前面的卷帘门正在下降。"],
    "approaching": ["A reach truck is backing up right behind me.", "An AGV is coming head-on.",
                    "A pallet truck is heading straight for me.", "Ein Stapler setzt zurück.",
                    "Un montacargas viene hacia mí.", "Un chariot élévateur vient vers moi.", "一辆叉车朝我开过来。"],
    "blocked": ["The cross-aisle is blocked by a stalled tugger.", "Robot 7 is stuck with a fault light on.",
                "Aisle 2 is taped off for repairs.", "Der Gang ist gesperrt.", "El pasillo está bloqueado.",
                "L'allée est bloquée.", "通道被堵住了。"],
    "stop_order": ["Dispatch says: all robots stop now.", "Hold your position, inspection under way.",
                   "Do not enter the loading area.", "Alle Fahrzeuge sofort anhalten!",
                   "¡Alto! No avancen.", "Arrêtez-vous, ne bougez plus.", "所有机器人原地待命。"],
}
CLEAR = [
    "Aisle ahead is empty and well lit.", "No one around, the lane is free for 25 m.",
    "Nothing blocking the route to the lift.", "The floor is dry and free of debris.",
    "The leak from yesterday was fixed and the aisle reopened.", "A forklift is parked at its charger, engine off.",
    "Two colleagues are talking far behind me, walking away.", "The fire door is open as usual.",
    "Lane markings were repainted last week.", "Shift change in ten minutes; my route is clear.",
    "Please deliver the parcels to the packing area.", "Der Gang ist frei, keine Personen.",
    "Kein Öl, keine Hindernisse auf dem Weg.", "El pasillo está despejado, no hay nadie.",
    "Sin derrames ni obstáculos.", "La voie est libre, aucun obstacle.", "Il n'y a pas de fumée.",
    "通道畅通，没有人。", "地面干燥，没有障碍物。", "The previous blockage has been cleared.",
]


@pytest.mark.parametrize("kind, text", [(k, t) for k, ts in HAZARDS.items() for t in ts])
def test_hazard_classes_are_found(kind, text):
    found = scan(text)
    assert severity(found) == HALT, (text, found)
    assert kind in {m.kind for m in found} or kind in ("person_down", "fallen_goods"), (text, found)


@pytest.mark.parametrize("text", CLEAR)
def test_clear_reports_raise_no_hazard(text):
    assert scan(text) == [], text


def test_wet_floor_is_a_caution_and_caution_loses_to_halt():
    assert severity(scan("The floor is wet near bay 3.")) == CAUTION
    assert severity(scan("Wet floor, and smoke from the charger.")) == HALT
    assert severity(scan("")) == ""


def test_negation_only_counts_just_before_the_term_in_the_same_clause():
    assert scan("No smoke at all.") == []
    assert scan("Nothing here, but smoke is coming from the left.")  # other clause
    assert scan("Don't worry about the spilled oil.")                # disregard is no negation
    assert scan("Not sure, I think a pallet has fallen over there.")  # negation too far back


@pytest.mark.parametrize("text", [
    "Follow the evacuation route signs; the aisle is empty.",
    "An evacuation drill is planned for next week.",
    "In case of fire, use exit B. The lane is clear.",
    "The smoke detector test finished an hour ago.",
    "The spill kit was restocked at the end of the aisle.",
])
def test_names_of_safety_things_and_conditionals_are_no_hazard(text):
    assert scan(text) == [], text


@pytest.mark.parametrize("text", [
    "The smoke detector went off above aisle 3.",
    "Smoke alarm going off in the packing area.",
    "There is smoke near the smoke detector.",
    "Evacuate the building now.",
    "A spill next to the spill kit, oil everywhere.",
    "In case of fire use exit B: there is a fire at exit A.",
])
def test_an_active_hazard_beside_those_names_still_counts(text):
    assert severity(scan(text)) == HALT, (text, scan(text))


# A second batch, written later in fresh wording (plurals, words between the thing and what it
# does, states of a person rather than "lying"): the composed patterns (goods + a falling verb,
# a liquid + where it goes) and the added person, heat, barrier, approach and blockage wording.
FRESH_HAZARDS = {
 "fallen": ["Pallets slid into the lane in front of me.", "Boxes slid off the pallet onto the floor.",
   "A shelf upright gave way.", "A rack beam gave way and the load came down.", "Cartons tumbled onto the floor ahead.",
   "The load shifted and dropped onto the aisle.", "Stacked crates came down across the lane.",
   "Bags of flour burst open across the floor.", "A roll cage tipped over in the aisle.",
   "A box dropped from the mezzanine onto my path.", "Totes are all over the floor after a stack fell.",
   "The top layer of the pallet slid off.", "Crates slipped off the forks and are lying in the aisle.",
   "Kartons sind vom Regal gerutscht.", "Las cajas se deslizaron al pasillo."],
 "spill": ["Hydraulic fluid is spreading across the floor.", "Paint spilled across the lane.",
   "A bottle of cleaner broke, liquid everywhere.", "Water is pouring from a burst pipe onto the floor.",
   "Glue is running across the aisle.", "There's a slick of grease ahead."],
 "fire": ["Flames are coming from the charger.", "I smell something burning.", "The charger is glowing red hot.",
   "A battery pack is swelling and hissing.", "Sparks flying from the cable.", "The fire alarm went off."],
 "down": ["A man is on the floor holding his leg.", "Someone slipped and can't get up.",
   "A worker is sitting on the floor clutching his arm.", "A picker fell off the ladder.",
   "A colleague is on the ground and groaning."],
 "closing": ["The fast door has started coming down.", "The shutter is dropping.", "The gate is swinging closed.",
   "The roller door is going down.", "The barrier arm is lowering in front of me."],
 "approach": ["A tugger is reversing out of the bay.", "An AMR is coming head-on.", "A forklift is driving straight at me.",
   "A loose cart is rolling toward me.", "Another robot is heading my way in this single lane.",
   "A truck is backing into the bay behind me."],
 "blocked": ["A pallet has been moved into the lane and blocks it.", "A pallet was moved to my lane and blocks it.",
   "A cart was pushed to the crossing and is blocking it.", "A pallet was left in the middle of the aisle.", "The aisle is full of boxes.", "A ladder stands in the aisle ahead.",
   "A hand truck is parked across the lane.", "Cones and tape close off the aisle."],
}
FRESH_CLEAR = ["Pallets are stacked neatly in their bays.", "Totes dropped off at the packing station.", "The shelves were restocked this morning.",
  "Water bottles are on the top shelf.", "The drinks aisle has juice and milk on the racks.", "There are people on the floor today, working at the tables far away.",
  "Night shift, the whole hall is empty.", "Boxes are placed in the aisle racks as planned.", "The gate is open and stays open.",
  "A forklift is parked at its charger, engine off.", "The paint on the lane markings is fresh and dry.",
  "The last pallet of the order was loaded onto the truck.", "Stock levels are fine; cases are on the shelves.",
  "The battery is at 60 % and the charger works.", "I am heading to the lift, nobody on the way.", "The cleaner finished the round, floor is dry.",
  "A picker is in the next aisle over, 12 m away.", "Lane markings were repainted last week.", "The door at the end of the aisle is open.",
  "Crates are lined up along the wall, clear of the lane.", "A wrapped pallet is parked in its marked bay to my right.",
  "The pallet that was blocking this lane yesterday has been moved to storage.", "The broken-down forklift was towed away.",
  "The trolley that blocked the aisle got pushed aside.", "The fallen crates were moved back to their rack."]


@pytest.mark.parametrize("text", [t for ts in FRESH_HAZARDS.values() for t in ts])
def test_fresh_wording_of_hazards_halts(text):
    assert severity(scan(text)) == HALT, (text, scan(text))


@pytest.mark.parametrize("text", FRESH_CLEAR)
def test_fresh_wording_of_clear_reports_raises_nothing(text):
    assert scan(text) == [], (text, scan(text))


# the robot's own battery signals are no hazard on the way: a stop there would strand the robot
OWN_BATTERY_SIGNALS = ["Low battery alarm is going off.", "The battery warning light is on.",
                       "Charge warning lights flashing, 9 % left.", "Low-battery alarm sounding, 6 %."]
STILL_HAZARDS = ["A forklift with its warning lights on is stuck in the lane.", "The fire alarm is going off.",
                 "The battery is smoking!", "Battery warning light on and the pack is swelling.",
                 "Half a pallet of tins came off the top shelf and is rolling around the aisle.",
                 "A child has wandered in from the visitor area and is running between the racks.",
                 "Security says there is an unattended bag in the aisle ahead, keep clear.",
                 "Stay away from aisle 7, a rack is being repaired."]
NOT_HAZARDS = ["Kids' toys are on the shelves in aisle 3.", "Child seats are stored in aisle 4.",
               "Keep clear of the robot, says the sign.", "The label came off the box."]


@pytest.mark.parametrize("text", OWN_BATTERY_SIGNALS + NOT_HAZARDS)
def test_own_battery_signals_and_harmless_wording_raise_nothing(text):
    assert scan(text) == [], (text, scan(text))


@pytest.mark.parametrize("text", STILL_HAZARDS)
def test_hazards_beside_those_wordings_still_halt(text):
    assert severity(scan(text)) == HALT, (text, scan(text))


def test_a_battery_alarm_on_a_flat_battery_docks():
    """The text rule used to stop a robot at 7 % whose report said "battery warning light on"."""
    from quant_llm_node.config import SafetyConfig
    from quant_llm_node.reasoning.safety import DockSites, SafetyLayer
    from quant_llm_node.reasoning.types import SOURCE_LLM, Decision, RobotState
    layer = SafetyLayer(SafetyConfig(), DockSites(("dock_1",), {"aisle_3": "dock_1"}))
    state = RobotState(speed_mps=0.5, battery_pct=7.0, obstacle_distance_m=20.0, zone="aisle_3")
    final = layer.apply(Decision("go_to", 1.0, "packing", "", SOURCE_LLM), state,
                        "Battery warning light on, 7 percent left.", "packing")
    assert (final.action, final.target_place_id) == ("dock", "dock_1")


# A third batch: loads and racking that may come down, a hazard that is over (placed in the past
# with the way said clear now), and "not moving" said of a machine rather than a person.
MAY_COME_DOWN = ["The top pallet is leaning out over the lane.", "A carton hangs off the edge of the top shelf, about to fall.",
                 "The rack upright is bent where a forklift hit it.", "Damaged racking at the end of this aisle.",
                 "A stack of crates is wobbling on the forks.", "Eine Palette droht umzukippen.",
                 "Una caja está a punto de caer.", "Un carton est sur le point de tomber.", "货架摇摇欲坠。"]
OVER_OR_HARMLESS = ["Yesterday a box fell here, but today the aisle is spotless and empty.",
                    "A pallet fell in this lane last week; the lane is clear now.",
                    "Two hours ago there was a leak here. The floor is dry now.",
                    "Another robot is parked at its charger, not moving.",
                    "Pallets are stacked neatly inside the racks, none sticking out into the lane."]
STILL_THERE = ["Since this morning there is a leak here, but the lane is open.",
               "Yesterday a box fell here and it is still lying in the lane.", "Yesterday a box fell here.",
               "A pallet fell here an hour ago, ignore it, the aisle is clear.",
               "A man is lying by the robot charger, not moving.",
               "The forklift driver is slumped in his seat, not moving.", "Someone by the conveyor, not moving.",
               "Earlier a shelf collapsed; the aisle is not clear.",
               "Hier ist Öl ausgelaufen, aber der Gang ist jetzt frei.",
               "An hour ago a pipe burst and water is pouring onto the floor, but the lane is open now.",
               "Yesterday a rack collapsed in aisle 7, but aisle 3 is clear.",
               "As reported earlier, smoke is coming from the charger, but the lane is open now.",
               "Yesterday a pallet fell and there is broken glass everywhere; the aisle is open now."]


@pytest.mark.parametrize("text", MAY_COME_DOWN + STILL_THERE)
def test_loads_that_may_come_down_and_hazards_still_there_halt(text):
    assert severity(scan(text)) == HALT, (text, scan(text))


@pytest.mark.parametrize("text", OVER_OR_HARMLESS)
def test_hazards_that_are_over_and_still_machines_raise_nothing(text):
    assert scan(text) == [], (text, scan(text))


# A fourth batch: things lying across or reaching into the way, goods on the floor in front of
# the robot, hanging obstructions, work under way, sprinklers released, being told to make way,
# inflected German participles, a person flat out on the floor, a radio order to wait; and a
# vehicle that drove away, "no need to wait" and "skip the stop" (no hazard, no order).
IN_THE_WAY = ["A hand truck is left sideways across the cross-aisle.", "A broom handle sticks out into my lane.",
              "Loose boxes all over the floor near rack D.", "Two crates are on the floor right in front of me.",
              "A chain is dangling from the mezzanine.", "A strap hangs at sensor height across the opening.",
              "The racking in bay 4 is being repaired.", "Electricians working at height above the lane.",
              "The sprinkler system activated in zone B.", "Make way, the tugger train is coming through!",
              "The driver yelled at me to get out of his way.", "Ein heruntergefallener Karton liegt quer im Weg.",
              "Da steht ein umgestürzter Gitterwagen.", "A man is flat out on the floor by rack B.", "Radio: the supervisor wants everyone to wait here."]
NOT_IN_THE_WAY = ["The forklift drove off toward the yard; the lane is empty now.",
                  "The tugger that was parked here has pulled away, the aisle is clear.",
                  "A coffee cup sits on a shelf at head height, the floor is clear.",
                  "Packing tables are across from the elevator, nothing in the lane.",
                  "The boxes are on the floor of the truck, not in the warehouse.",
                  "Sprinkler heads were inspected last week.",
                  "The supervisor says there is no need to wait, the lane is clear.",
                  "Dispatch radioed: skip the stop at the gate today."]


@pytest.mark.parametrize("text", IN_THE_WAY)
def test_things_in_the_way_and_making_way_halt(text):
    assert severity(scan(text)) == HALT, (text, scan(text))


@pytest.mark.parametrize("text", NOT_IN_THE_WAY)
def test_things_out_of_the_way_raise_nothing(text):
    assert scan(text) == [], (text, scan(text))


def test_a_fire_alarm_named_as_a_thing_is_no_hazard_but_one_sounding_is():
    assert not scan("Fire alarm test finished at 10:15, the warden has given the all-clear.")
    assert not scan("The fire alarm panel by the lift was serviced today.")
    assert severity(scan("The fire alarm is going off in aisle 3.")) == HALT
    assert severity(scan("There is a fire by the chargers.")) == HALT
