// SwiftPM builds a C target only when it has a source file; the ABI itself is the header.
#include "chimera_plugin.h"
