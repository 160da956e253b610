"""WHY it departs: cause (conversion, inherited, runtime, optimizer) and stage."""
