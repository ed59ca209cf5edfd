// Which backbones a modality uses. Kept out of iisan.h (which defines Modality) so that the
// few files that need these do not make every user of iisan.h rebuild.
#pragma once

#include "core/models/iisan.h"

namespace iisan::models {

inline bool UsesText(Modality m) { return m != Modality::kImage; }
inline bool UsesImage(Modality m) { return m != Modality::kText; }

}  // namespace iisan::models
